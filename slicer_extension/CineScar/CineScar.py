"""CineScar: contrast-free myocardial scar detection on short-axis cine MRI, with a MONAI Label server.

Thin module file (Slicer scripted-module conventions, SlicerTotalSegmentator style):

- ``CineScar``: module metadata;
- ``CineScarWidget``: the panel (Resources/UI/CineScar.ui): it wires the widgets to logic calls and shows the
  results (texts and enabled states from ``CineScarLib.panel``). Every action is wrapped in
  ``slicer.util.tryWithErrorDisplay``; network work runs in a worker thread (``CineScarLib.jobs.Job``) drained
  by a ``qt.QTimer`` so Slicer never freezes;
- ``CineScarLogic``: ``CineScarLib.logic.ScarLogic`` (GUI-free) with Slicer's logic base class;
- ``CineScarTest``: the self-test for "Reload and Test"; its bodies are ``CineScarLib.selftest``.

Everything but the widgets is in CineScarLib and tested outside Slicer.
"""

from __future__ import annotations

import logging
import os

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:
    from slicer.i18n import tr as _
except ImportError:  # Slicer < 5.4
    def _(text):
        return text

from CineScarLib import dicom_study, panel, selftest
from CineScarLib.database import default_database_path
from CineScarLib.errors import MonaiLabelError, is_offline
from CineScarLib.jobs import Job, JobSlots, ProgressView
from CineScarLib.logic import ScarLogic

SETTINGS_PREFIX = "CineScar/"
DEFAULT_SERVER = "http://127.0.0.1:8000"
POLL_INTERVAL_MS = 150
BULLSEYE_SIZE = 200  # pixels


class CineScar(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Cine Scar")
        self.parent.categories = [_("Cardiac")]
        self.parent.dependencies = ["Sequences"]
        self.parent.contributors = ["ST-RAN Scar project"]
        self.parent.helpText = _(
            "Detect myocardial scar on a short-axis cine MRI without contrast, with a MONAI Label server running "
            "the ST-RAN Scar app: play the cine with the attention map over it, read the study and per-slice scar "
            "probabilities, correct the labels, get the next most uncertain study, retrain, and keep every result "
            "in a local database. Research use only: not for diagnosis."
        )
        self.parent.acknowledgementText = _(
            "After Amyar et al., 'Gadolinium-free cardiac MRI myocardial scar detection by 4D convolution "
            "factorization', MICCAI 2023. Uses MONAI Label and 3D Slicer."
        )


class CineScarWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. It only reads the GUI, starts logic calls and shows their results."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.jobs = JobSlots()
        self._timer = None
        self._sceneSequence = None

    # ---------------------------------------------------------------- setup

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CineScar.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.ensureSequenceWidgets()
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = CineScarLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onTimer)

        settings = qt.QSettings()
        self.ui.serverUrlLineEdit.text = settings.value(SETTINGS_PREFIX + "serverUrl", DEFAULT_SERVER)
        self.ui.reviewerLineEdit.text = settings.value(SETTINGS_PREFIX + "reviewer", "")
        self.ui.databasePathLineEdit.currentPath = settings.value(SETTINGS_PREFIX + "databasePath",
                                                                  default_database_path())
        self.ui.autoExportCheckBox.checked = slicer.util.toBool(settings.value(SETTINGS_PREFIX + "autoExport", False))
        self.ui.progressBar.setVisible(False)
        self.ui.sendQueueButton.setVisible(False)
        self.ui.scoreTableView.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        self.ui.bullseyeLabel.setFixedSize(BULLSEYE_SIZE, BULLSEYE_SIZE)
        self._bullseyeClicks = _ClickFilter(self.onBullseyeClicked)
        self.ui.bullseyeLabel.installEventFilter(self._bullseyeClicks)

        for name, signal, slot in panel.SIGNALS:  # which widget's signal calls which method below
            getattr(self.ui, name).connect(signal, getattr(self, slot))

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.logic.setDatabaseLocation(self.ui.databasePathLineEdit.currentPath)
        self.logic.setAutoExport(self.ui.autoExportCheckBox.checked)
        self.updateButtons()

    def ensureSequenceWidgets(self):
        """The cine play/seek widgets come from the Sequences module's designer plugins; if this Slicer's UI
        loader did not know them, make them in code (as SlicerMorph's Animator does) in the same rows."""
        rows = (("playWidget", "qMRMLSequenceBrowserPlayWidget", 4), ("seekWidget", "qMRMLSequenceBrowserSeekWidget", 5))
        for name, className, row in rows:
            widget = getattr(self.ui, name, None)
            if widget is not None and hasattr(widget, "setMRMLSequenceBrowserNode"):
                continue
            widget = getattr(slicer, className)()
            widget.setMRMLScene(slicer.mrmlScene)
            self.ui.resultCollapsibleButton.layout().setWidget(row, qt.QFormLayout.FieldRole, widget)
            setattr(self.ui, name, widget)

    def cleanup(self):
        self.removeObservers()
        if self._timer is not None:
            self._timer.stop()
        self.jobs.cancel_all()
        if self.logic is not None:
            self.logic.close()

    def onSceneStartClose(self, caller, event):
        self.ui.scoreTableView.setMRMLTableNode(None)
        self.ui.playWidget.setMRMLSequenceBrowserNode(None)
        self.ui.seekWidget.setMRMLSequenceBrowserNode(None)
        self.logic.forgetNodes()
        self.updateButtons()

    # ---------------------------------------------------------------- jobs (worker thread + timer)

    def startJob(self, fn, *args, onDone=None, onError=None, bar=None, label=None, training=False, **kwargs):
        """Run ``fn(*args, progress=, cancel=, **kwargs)`` in a worker; ``onDone(result)`` runs here afterwards.

        A failure is shown in a dialog with the traceback as details, unless ``onError(error, details)`` is given."""
        if self.jobs.running(training):
            raise RuntimeError(_("Another operation is still running: wait for it or cancel it."))
        view = ProgressView(bar or self.ui.progressBar, label or self.ui.progressLabel, after=self.updateButtons)

        def done(result):
            view.ended(100)
            if onDone is not None:
                with slicer.util.tryWithErrorDisplay(_("Could not show the result."), waitCursor=True):
                    onDone(result)

        def failed(error, details):
            view.ended(0, str(error))
            if isinstance(error, MonaiLabelError) and is_offline(error):
                self.ui.connectionStatusLabel.text = _("Not connected: ") + str(error)
            if onError is not None:
                onError(error, details)
            else:
                slicer.util.errorDisplay(str(error), detailedText=details)

        job = Job(fn, *args, **kwargs).start(on_progress=view.progress, on_done=done, on_error=failed,
                                             on_cancelled=lambda: view.ended(0, _("Cancelled.")))
        self.jobs.add(job, training)
        self.updateButtons()
        self._timer.start()
        return job

    def onTimer(self):
        if not self.jobs.poll():  # job callbacks (progress, done, error) run here, on the GUI thread
            self._timer.stop()

    def updateButtons(self):
        sceneSource, node = self.ui.sceneRadioButton.checked, self.ui.sequenceSelector.currentNode()
        states = panel.enabled_buttons(
            busy=self.jobs.running(), connected=self.logic is not None and self.logic.connected,
            shown=self.logic is not None and self.logic.detection is not None, training=self.jobs.running(True),
            scene_source=sceneSource, from_dicom=dicom_study.is_from_dicom(node),
            source_ready=(self.ui.studyComboBox.count > 0) if self.ui.datastoreRadioButton.checked else (node is not None))
        for name, enabled in states.items():
            getattr(self.ui, name).enabled = enabled

    def addStudy(self, imageId, description):
        """Add ``imageId`` to the study list (as ``description``) if the list does not have it."""
        if self.ui.studyComboBox.findData(imageId) < 0:
            self.ui.studyComboBox.addItem(description, imageId)

    # ---------------------------------------------------------------- server and studies

    def onCheckConnection(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot check the connection."), waitCursor=True):
            url = self.ui.serverUrlLineEdit.text.strip()
            self.logic.setServer(url)
            qt.QSettings().setValue(SETTINGS_PREFIX + "serverUrl", url)
            self.ui.connectionStatusLabel.text = _("Connecting to ") + self.logic.session.client.url + " ..."
            # a failed check is shown in the status label (the exact failure text), not in a dialog
            self.startJob(self.logic.connect, onDone=self.onConnected, onError=self.onConnectFailed)

    def onConnectFailed(self, error, details):
        self.ui.connectionStatusLabel.text = _("Not connected: ") + str(error)
        self.ui.connectionStatusLabel.toolTip = details
        self.ui.progressLabel.text = ""
        self.ui.progressBar.setVisible(False)
        self.updateButtons()

    def onConnected(self, answer, select=None):
        status, studies = answer
        self.ui.connectionStatusLabel.text = panel.connection_text(status, studies)
        self.ui.connectionStatusLabel.toolTip = ""
        self.ui.progressLabel.text = ""
        self.ui.progressBar.setVisible(False)
        self.logic.ensureDatabase(ask=False)  # no question here: only if SQLAlchemy is already there
        current = select or self.ui.studyComboBox.currentData
        self.ui.studyComboBox.clear()
        for entry in studies:
            self.ui.studyComboBox.addItem(entry.describe(), entry.image_id)
        index = self.ui.studyComboBox.findData(current) if current else -1
        self.ui.studyComboBox.currentIndex = max(index, 0)
        self.updateQueueLabel()
        self.updateButtons()

    def onOpenDicomFolder(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot import the DICOM folder."), waitCursor=True):
            folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("DICOM study folder to import"))
            if folder:
                self.startJob(self.logic.importDicomFolder, folder, onDone=self.onDicomFolderImported)

    def onDicomFolderImported(self, answer):
        imported, status, studies = answer
        self.onConnected((status, studies), select=imported.image_id)  # the refreshed list, the new study selected
        self.ui.datastoreRadioButton.checked = True
        self.ui.progressLabel.text = imported.message()

    def onSourceChanged(self, _checked=False):
        self.updateButtons()

    # ---------------------------------------------------------------- detection

    def onDetect(self, _checked=False, imageId=None):
        with slicer.util.tryWithErrorDisplay(_("Cannot start the detection."), waitCursor=True):
            self.ensureDatabaseForAutoExport()
            mcSamples = int(self.ui.mcSamplesSpinBox.value)
            if imageId is None and self.ui.sceneRadioButton.checked:
                sequence = self.ui.sequenceSelector.currentNode()
                if sequence is None:
                    raise ValueError(_("Choose the cine sequence loaded in Slicer (or pick a study on the server)."))
                browser = self.logic.browserForSequence(sequence)
                volume = self.logic.cineFromSequence(sequence, browser)  # MRML is read here, on the GUI thread
                self._sceneSequence = (sequence, browser)
                self.startJob(self.logic.detect, volume=volume, mcSamples=mcSamples, onDone=self.onDetected)
            else:
                imageId = imageId or self.ui.studyComboBox.currentData
                if not imageId:
                    raise ValueError(_("Choose a study (Check connection lists the server's studies)."))
                self._sceneSequence = None
                self.startJob(self.logic.detect, imageId=imageId, mcSamples=mcSamples, onDone=self.onDetected)

    def onDetectDicomStudy(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot detect on the DICOM study."), waitCursor=True):
            self.ensureDatabaseForAutoExport()
            studyUid, files = self.logic.dicomStudyOf(self.ui.sequenceSelector.currentNode())  # the database: here
            self._sceneSequence = None  # the result is shown on the server's copy of the study, as for a datastore one
            self.startJob(self.logic.detectDicomStudy, studyUid, files, mcSamples=int(self.ui.mcSamplesSpinBox.value),
                          onDone=self.onDicomStudyDetected)

    def onDicomStudyDetected(self, detection):
        self.addStudy(detection.image_id, f"{detection.image_id} - from Slicer's DICOM database")
        self.onDetected(detection)
        message = dicom_study.pacs_message(detection)
        self.ui.progressLabel.text = message
        slicer.util.showStatusMessage(message, 30000)
        logging.info("CineScar: %s", message)

    def onCancel(self, _checked=False):
        if self.jobs.cancel():
            self.ui.progressLabel.text = _("Cancelling (the server finishes the current request; its answer is dropped)...")

    def onDetected(self, detection):
        sequence, browser = self._sceneSequence or (None, None)
        self.addStudy(detection.image_id, f"{detection.image_id} - uploaded from Slicer")  # a cine from the scene
        nodes = self.logic.showDetection(detection, cineSequence=sequence, browser=browser)
        texts = panel.result_texts(detection)
        self.ui.probabilityLabel.text = texts["probabilityLabel"]
        self.ui.verdictLabel.text = texts["verdictLabel"]
        self.ui.uncertaintyLabel.text = texts["uncertaintyLabel"] or _("not computed (MC samples = 0)")
        self.ui.modelLabel.text = texts["modelLabel"]
        self.ui.playWidget.setMRMLSequenceBrowserNode(nodes.browser)
        self.ui.seekWidget.setMRMLSequenceBrowserNode(nodes.browser)
        self.ui.scoreTableView.setMRMLTableNode(nodes.table)
        self.updateBullseye()
        self.ui.studyLabelComboBox.currentIndex = 0
        self.ui.commentLineEdit.text = ""
        if detection.export_error:
            self.ui.databaseStatusLabel.text = _("Not stored: ") + detection.export_error
        elif detection.exported:
            self.ui.databaseStatusLabel.text = _("Stored automatically. ") + self.logic.databaseSummary()
        self.updateButtons()

    def onOverlayChanged(self, _value=None):
        self.logic.setOverlay(self.ui.opacitySlider.value, self.ui.thresholdSlider.value)

    def onTableClicked(self, index):
        with slicer.util.tryWithErrorDisplay(_("Cannot show the slice.")):
            self.logic.jumpToSlice(index.row())

    def onBullseyeClicked(self, x, y):
        """A click on the bullseye: select the segment's slice in the table and cycle its label."""
        with slicer.util.tryWithErrorDisplay(_("Cannot select the segment.")):
            answer = self.logic.clickBullseye(x, y, BULLSEYE_SIZE)
            if answer is not None and answer[1] is not None:
                self.ui.scoreTableView.selectRow(answer[1])
            self.updateBullseye()

    def updateBullseye(self):
        png = self.logic.bullseyePng(BULLSEYE_SIZE)
        if png is None:
            self.ui.bullseyeLabel.clear()
            self.ui.bullseyeLabel.text = "-"
            return
        pixmap = qt.QPixmap()
        pixmap.loadFromData(qt.QByteArray(png))
        self.ui.bullseyeLabel.setPixmap(pixmap)

    def onShowChart(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot show the chart.")):
            self.logic.showChart()

    def onReport(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot write the report."), waitCursor=True):
            folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Save the study report in"))
            if folder:
                paths = self.logic.writeReport(folder)
                if paths:
                    slicer.util.showStatusMessage(_("Report written: ") + ", ".join(str(p) for p in paths), 10000)

    # ---------------------------------------------------------------- review

    def onCopyPrediction(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot copy the predicted labels.")):
            self.logic.copyPredictedLabels()

    def onReviewerChanged(self):
        qt.QSettings().setValue(SETTINGS_PREFIX + "reviewer", self.ui.reviewerLineEdit.text.strip())

    def onSubmit(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot submit the correction."), waitCursor=True):
            if self.ui.studyLabelComboBox.currentIndex == 0:
                raise ValueError(_("Choose the study label (scar or no scar) before submitting."))
            correction = self.logic.makeCorrection(
                studyLabel=1 if self.ui.studyLabelComboBox.currentText == "scar" else 0,
                reviewer=self.ui.reviewerLineEdit.text.strip(),
                source=self.ui.sourceComboBox.currentText,
                comment=self.ui.commentLineEdit.text.strip(),
            )
            self.onReviewerChanged()
            self.ensureDatabase(_("Corrections made while the server is unreachable are kept in the results database."))
            self.startJob(self.logic.submitCorrection, correction, onDone=self.onSubmitted)

    def onSubmitted(self, outcome):
        self.ui.queueLabel.text, styleSheet = panel.submitted_text(outcome)
        self.ui.queueLabel.setStyleSheet(styleSheet)
        if outcome.database_warning:
            slicer.util.warningDisplay(outcome.database_warning)
        self.updateQueueLabel(keepText=True)

    def onSendQueue(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot send the waiting corrections."), waitCursor=True):
            self.startJob(self.logic.sendWaitingCorrections, onDone=self.onQueueSent)

    def onQueueSent(self, outcome):
        self.ui.queueLabel.text, styleSheet = panel.flushed_text(outcome)
        self.ui.queueLabel.setStyleSheet(styleSheet)
        self.updateQueueLabel(keepText=True)

    def updateQueueLabel(self, keepText=False):
        pending = self.logic.pendingCount()
        self.ui.sendQueueButton.setVisible(pending > 0)
        self.ui.sendQueueButton.text = _("Send {n} waiting correction(s)").format(n=pending) if pending else ""
        if not keepText:
            self.ui.queueLabel.text = (_("{n} correction(s) made offline are waiting to be sent.").format(n=pending)
                                       if pending else "")

    def onNextStudy(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot get the next study."), waitCursor=True):
            self.startJob(self.logic.nextStudy, onDone=self.onNextStudyChosen)

    def onNextStudyChosen(self, imageId):
        if imageId is None:
            slicer.util.infoDisplay(_("Every study in the datastore has a reviewer label: nothing left to review."))
            return
        self.addStudy(imageId, imageId)
        self.ui.studyComboBox.currentIndex = self.ui.studyComboBox.findData(imageId)
        self.ui.datastoreRadioButton.checked = True
        reason = (self.logic.lastPick() or {}).get("reason")
        if reason:
            self.ui.studyComboBox.toolTip = reason
            slicer.util.showStatusMessage(_("Next study: {reason}").format(reason=reason), 15000)
        self.onDetect(imageId=imageId)

    # ---------------------------------------------------------------- training

    def onRetrain(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot start the training."), waitCursor=True):
            options = {"epochs": int(self.ui.epochsSpinBox.value)}
            self.ui.trainingStatusLabel.text = _("Starting the training...")
            self.startJob(self.logic.retrain, options, onDone=self.onTrained, bar=self.ui.trainingProgressBar,
                          label=self.ui.trainingStatusLabel, training=True)

    def onTrained(self, progress):
        self.ui.trainingStatusLabel.text = panel.training_text(progress)
        if progress.state != "live":
            slicer.util.errorDisplay(progress.message)
        elif self.logic.status is not None:
            self.ui.connectionStatusLabel.text = self.logic.status.summary()

    def onStopTraining(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot stop the training."), waitCursor=True):
            self.jobs.cancel(training=True)
            self.logic.stopTraining(onError=lambda message: logging.warning(message))
            self.ui.trainingStatusLabel.text = _("Stop requested; the served model does not change.")

    # ---------------------------------------------------------------- results database

    def ensureDatabase(self, why=""):
        """True if the results database can be used (asks once to install SQLAlchemy)."""
        return self.logic.ensureDatabase(ask=True, why=why)

    def ensureDatabaseForAutoExport(self):
        if self.ui.autoExportCheckBox.checked and not self.ensureDatabase(_("Automatic storing of results is on.")):
            self.ui.autoExportCheckBox.checked = False

    def onAutoExportToggled(self, checked):
        qt.QSettings().setValue(SETTINGS_PREFIX + "autoExport", bool(checked))
        if checked and not self.ensureDatabase(_("Every detection will be stored.")):
            self.ui.autoExportCheckBox.checked = False
            return
        self.logic.setAutoExport(bool(checked))

    def onDatabasePathChanged(self, path):
        qt.QSettings().setValue(SETTINGS_PREFIX + "databasePath", path)
        self.logic.setDatabaseLocation(path)

    def onExport(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot store the result."), waitCursor=True):
            if self.ensureDatabase():
                self.logic.exportDetection()
                self.ui.databaseStatusLabel.text = _("Stored. ") + self.logic.databaseSummary()

    def onExportCsv(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot export the database."), waitCursor=True):
            if not self.ensureDatabase():
                return
            folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export the results database to"))
            if folder:
                files = self.logic.exportCsv(folder)
                self.ui.databaseStatusLabel.text = _("Exported {n} files to {folder}.").format(n=len(files), folder=folder)


def _ClickFilter(callback):
    """A Qt event filter calling ``callback(x, y)`` on a left click (built on first use: the class needs Qt)."""

    class ClickFilter(qt.QObject):
        def eventFilter(self, _watched, event):
            if event.type() == qt.QEvent.MouseButtonPress and event.button() == qt.Qt.LeftButton:
                callback(event.pos().x(), event.pos().y())
                return True
            return False

    return ClickFilter()


class CineScarLogic(ScarLogic, ScriptedLoadableModuleLogic):
    """The module's logic: ``CineScarLib.logic.ScarLogic`` (GUI-free, tested on slicer-core) as Slicer's logic."""

    def __init__(self):
        ScarLogic.__init__(self)
        ScriptedLoadableModuleLogic.__init__(self)  # its super().__init__() is object's here: each runs once


class CineScarTest(ScriptedLoadableModuleTest):
    """Self-test in Slicer ("Reload and Test", or the Self Tests module); the bodies are CineScarLib.selftest.

    ``test_CineScarServer`` runs only with CINESCAR_TEST_SERVER_URL set (e.g. http://127.0.0.1:8000) before
    starting Slicer, and writes to the server only with CINESCAR_TEST_ALLOW_WRITES=1."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_CineScarScene()
        self.setUp()
        self.test_CineScarServer()

    def test_CineScarScene(self):
        selftest.scene_test(self, CineScarLogic())

    def test_CineScarServer(self):
        selftest.server_test(self, CineScarLogic, os.environ)
