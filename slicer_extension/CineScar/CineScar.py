"""CineScar: contrast-free myocardial scar detection on short-axis cine MRI, with a MONAI Label server.

Thin module file (Slicer scripted-module conventions, SlicerTotalSegmentator style):

- ``CineScar``: module metadata;
- ``CineScarWidget``: the panel (Resources/UI/CineScar.ui). Every action is wrapped in
  ``slicer.util.tryWithErrorDisplay``; network work runs in a worker thread
  (``CineScarLib.jobs.Job``) drained by a ``qt.QTimer`` so Slicer never freezes;
- ``CineScarLogic``: GUI-free; the workflow is ``CineScarLib.session.ScarSession``
  (REST, results database) and the scene building is ``CineScarLib.mrml``;
- ``CineScarTest``: a self-test for Slicer ("Reload and Test").

Everything but the widgets is in CineScarLib and tested outside Slicer.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading

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

from CineScarLib import dicom_study, mrml, segments
from CineScarLib.client import Cancelled, MonaiLabelError, is_offline
from CineScarLib.jobs import Job
from CineScarLib.session import ScarSession

SETTINGS_PREFIX = "CineScar/"
DEFAULT_SERVER = "http://127.0.0.1:8000"
SQLALCHEMY_REQUIREMENT = "SQLAlchemy>=2.0,<3"
POLL_INTERVAL_MS = 150
BULLSEYE_SIZE = 200  # pixels


def defaultDatabasePath():
    return os.path.join(os.path.expanduser("~"), "CineScar", "results.sqlite")


#
# CineScar
#


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


#
# CineScarWidget
#


class CineScarWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. It only reads the GUI, starts logic calls and shows their results."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._job = None
        self._jobOnDone = None
        self._jobBar = None
        self._jobLabel = None
        self._trainingJob = None
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
        self.ui.databasePathLineEdit.currentPath = settings.value(SETTINGS_PREFIX + "databasePath", defaultDatabasePath())
        self.ui.autoExportCheckBox.checked = slicer.util.toBool(settings.value(SETTINGS_PREFIX + "autoExport", False))
        self.ui.progressBar.setVisible(False)
        self.ui.sendQueueButton.setVisible(False)
        self.ui.scoreTableView.setSelectionBehavior(qt.QAbstractItemView.SelectRows)

        self.ui.checkConnectionButton.connect("clicked(bool)", self.onCheckConnection)
        self.ui.serverUrlLineEdit.connect("returnPressed()", self.onCheckConnection)
        self.ui.refreshStudiesButton.connect("clicked(bool)", self.onCheckConnection)
        self.ui.openDicomFolderButton.connect("clicked(bool)", self.onOpenDicomFolder)
        self.ui.datastoreRadioButton.connect("toggled(bool)", self.onSourceChanged)
        self.ui.sequenceSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSourceChanged)
        self.ui.sceneRadioButton.connect("toggled(bool)", self.onSourceChanged)
        self.ui.detectButton.connect("clicked(bool)", self.onDetect)
        self.ui.detectDicomStudyButton.connect("clicked(bool)", self.onDetectDicomStudy)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOverlayChanged)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onOverlayChanged)
        self.ui.scoreTableView.connect("clicked(QModelIndex)", self.onTableClicked)
        self.ui.bullseyeLabel.setFixedSize(BULLSEYE_SIZE, BULLSEYE_SIZE)
        self._bullseyeClicks = _ClickFilter(self.onBullseyeClicked)
        self.ui.bullseyeLabel.installEventFilter(self._bullseyeClicks)
        self.ui.showChartButton.connect("clicked(bool)", self.onShowChart)
        self.ui.copyPredictionButton.connect("clicked(bool)", self.onCopyPrediction)
        self.ui.submitButton.connect("clicked(bool)", self.onSubmit)
        self.ui.nextStudyButton.connect("clicked(bool)", self.onNextStudy)
        self.ui.sendQueueButton.connect("clicked(bool)", self.onSendQueue)
        self.ui.retrainButton.connect("clicked(bool)", self.onRetrain)
        self.ui.stopTrainingButton.connect("clicked(bool)", self.onStopTraining)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.autoExportCheckBox.connect("toggled(bool)", self.onAutoExportToggled)
        self.ui.databasePathLineEdit.connect("currentPathChanged(QString)", self.onDatabasePathChanged)
        self.ui.reviewerLineEdit.connect("editingFinished()", self.onReviewerChanged)

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
        for job in (self._job, self._trainingJob):
            if job is not None:
                job.cancel()
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
        current = self._trainingJob if training else self._job
        if current is not None and not current.finished:
            raise RuntimeError(_("Another operation is still running: wait for it or cancel it."))
        job = Job(fn, *args, **kwargs)
        bar = bar or self.ui.progressBar
        label = label or self.ui.progressLabel

        def progress(fraction, message):
            bar.setVisible(True)
            if fraction is None:
                bar.setRange(0, 0)
            else:
                bar.setRange(0, 100)
                bar.setValue(int(round(100 * fraction)))
            label.text = message

        def done(result):
            bar.setRange(0, 100)
            bar.setValue(100)
            self.updateButtons()
            if onDone is not None:
                with slicer.util.tryWithErrorDisplay(_("Could not show the result."), waitCursor=True):
                    onDone(result)

        def failed(error, details):
            bar.setRange(0, 100)
            bar.setValue(0)
            label.text = str(error)
            self.updateButtons()
            if isinstance(error, MonaiLabelError) and is_offline(error):
                self.ui.connectionStatusLabel.text = _("Not connected: ") + str(error)
            if onError is not None:
                onError(error, details)
            else:
                slicer.util.errorDisplay(str(error), detailedText=details)

        def cancelled():
            bar.setRange(0, 100)
            bar.setValue(0)
            label.text = _("Cancelled.")
            self.updateButtons()

        job.start(on_progress=progress, on_done=done, on_error=failed, on_cancelled=cancelled)
        if training:
            self._trainingJob = job
        else:
            self._job = job
        self.updateButtons()
        self._timer.start()
        return job

    def onTimer(self):
        for job in (self._job, self._trainingJob):
            if job is not None and not job.finished:
                job.poll()  # callbacks (progress, done, error) run here, on the GUI thread
        if (self._job is None or self._job.finished) and (self._trainingJob is None or self._trainingJob.finished):
            self._timer.stop()

    def busy(self):
        return self._job is not None and not self._job.finished

    def training(self):
        return self._trainingJob is not None and not self._trainingJob.finished

    def updateButtons(self):
        busy, connected = self.busy(), self.logic is not None and self.logic.connected
        shown = self.logic is not None and self.logic.detection is not None
        for button in (self.ui.checkConnectionButton, self.ui.refreshStudiesButton):
            button.enabled = not busy
        sourceReady = (self.ui.studyComboBox.count > 0) if self.ui.datastoreRadioButton.checked else \
            (self.ui.sequenceSelector.currentNode() is not None)
        self.ui.detectButton.enabled = connected and not busy and sourceReady
        self.ui.detectDicomStudyButton.enabled = connected and not busy and self.ui.sceneRadioButton.checked and \
            dicom_study.is_from_dicom(self.ui.sequenceSelector.currentNode())
        self.ui.cancelButton.enabled = busy
        self.ui.submitButton.enabled = shown and not busy
        self.ui.copyPredictionButton.enabled = shown
        self.ui.nextStudyButton.enabled = self.ui.openDicomFolderButton.enabled = connected and not busy
        self.ui.showChartButton.enabled = shown
        self.ui.exportButton.enabled = shown
        self.ui.retrainButton.enabled = connected and not self.training()
        self.ui.stopTrainingButton.enabled = self.training()
        self.ui.sequenceSelector.enabled = self.ui.sceneRadioButton.checked

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
        open_ = sum(1 for s in studies if not s.labeled)
        self.ui.connectionStatusLabel.text = f"{status.summary()}; {len(studies)} studies ({open_} not reviewed)"
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
        if self.ui.studyComboBox.findData(detection.image_id) < 0:
            self.ui.studyComboBox.addItem(f"{detection.image_id} - from Slicer's DICOM database", detection.image_id)
        self.onDetected(detection)
        message = dicom_study.pacs_message(detection)
        self.ui.progressLabel.text = message
        slicer.util.showStatusMessage(message, 30000)
        logging.info("CineScar: %s", message)

    def onCancel(self, _checked=False):
        if self._job is not None:
            self._job.cancel()
            self.ui.progressLabel.text = _("Cancelling (the server finishes the current request; its answer is dropped)...")

    def onDetected(self, detection):
        sequence, browser = self._sceneSequence or (None, None)
        if self.ui.studyComboBox.findData(detection.image_id) < 0:  # a cine from the scene, now in the datastore
            self.ui.studyComboBox.addItem(f"{detection.image_id} - uploaded from Slicer", detection.image_id)
        nodes = self.logic.showDetection(detection, cineSequence=sequence, browser=browser)
        result = detection.result
        self.ui.probabilityLabel.text = f"{detection.probability:.3f}"
        self.ui.verdictLabel.text = f"{detection.verdict.upper()} (threshold {detection.threshold:.2f})"
        unc = result.get("uncertainty") or {}
        if unc.get("std") is not None:
            self.ui.uncertaintyLabel.text = (f"std {float(unc['std']):.3f}, entropy {float(unc.get('entropy') or 0):.2f} "
                                             f"({unc.get('method', '?')}, {unc.get('samples', '?')} samples)")
        else:
            self.ui.uncertaintyLabel.text = _("not computed (MC samples = 0)")
        model = result.get("model") or {}
        self.ui.modelLabel.text = f"{model.get('name', '?')} {model.get('version', '')}, sha256 {str(model.get('sha256', ''))[:12]}"
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

    # ---------------------------------------------------------------- review

    def onCopyPrediction(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot copy the predicted labels.")):
            self.logic.copyPredictedLabels()

    def onReviewerChanged(self):
        qt.QSettings().setValue(SETTINGS_PREFIX + "reviewer", self.ui.reviewerLineEdit.text.strip())

    def onSubmit(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot submit the correction."), waitCursor=True):
            choice = self.ui.studyLabelComboBox.currentIndex
            if choice == 0:
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
        text = outcome.message
        if outcome.flushed:
            text += f" {len(outcome.flushed)} waiting correction(s) were delivered first."
        self.ui.queueLabel.text = text
        self.ui.queueLabel.setStyleSheet("color: #b06000" if outcome.status == "queued" else "")
        if outcome.database_warning:
            slicer.util.warningDisplay(outcome.database_warning)
        self.updateQueueLabel(keepText=True)

    def onSendQueue(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot send the waiting corrections."), waitCursor=True):
            self.startJob(self.logic.sendWaitingCorrections, onDone=self.onQueueSent)

    def onQueueSent(self, outcome):
        self.ui.queueLabel.text = outcome.message()
        self.ui.queueLabel.setStyleSheet("color: #b06000" if outcome.pending else "")
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
        if self.ui.studyComboBox.findData(imageId) < 0:
            self.ui.studyComboBox.addItem(imageId, imageId)
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
        shown = ", ".join(f"{k} {v:.3f}" for k, v in progress.metrics.items() if isinstance(v, float))
        self.ui.trainingStatusLabel.text = progress.message + (f" ({shown})" if shown else "")
        if progress.state != "live":
            slicer.util.errorDisplay(progress.message)
        elif self.logic.status is not None:
            self.ui.connectionStatusLabel.text = self.logic.status.summary()

    def onStopTraining(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot stop the training."), waitCursor=True):
            if self._trainingJob is not None:
                self._trainingJob.cancel()
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
            if not self.ensureDatabase():
                return
            self.logic.exportDetection()
            self.ui.databaseStatusLabel.text = _("Stored. ") + self.logic.databaseSummary()

    def onExportCsv(self, _checked=False):
        with slicer.util.tryWithErrorDisplay(_("Cannot export the database."), waitCursor=True):
            if not self.ensureDatabase():
                return
            folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Export the results database to"))
            if not folder:
                return
            files = self.logic.exportCsv(folder)
            self.ui.databaseStatusLabel.text = _("Exported {n} files to {folder}.").format(n=len(files), folder=folder)


#
# CineScarLogic
#


def _ClickFilter(callback):
    """A Qt event filter calling ``callback(x, y)`` on a left click (built on first use: the class needs Qt)."""

    class ClickFilter(qt.QObject):
        def eventFilter(self, _watched, event):
            if event.type() == qt.QEvent.MouseButtonPress and event.button() == qt.Qt.LeftButton:
                callback(event.pos().x(), event.pos().y())
                return True
            return False

    return ClickFilter()


class CineScarLogic(ScriptedLoadableModuleLogic):
    """GUI-free. Methods marked (worker) may run in a worker thread: they touch neither Qt nor MRML."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.session = None
        self.detection = None
        self.nodes = None
        self.trainingRun = None
        self.bullseye = None  # CineScarLib.segments.BullseyeState of the shown detection
        self.databaseLocation = None
        self.databaseEnabled = False
        self.autoExport = False
        self.opacity = mrml.DEFAULT_OPACITY
        self.threshold = mrml.DEFAULT_THRESHOLD

    @property
    def status(self):
        """What the server said at the last connection (refreshed when a retrained model goes live)."""
        return None if self.session is None else self.session.status

    @property
    def connected(self):
        return self.status is not None

    def close(self):
        if self.session is not None:
            self.session.close()
            self.session = None

    # ---------------------------------------------------------------- configuration

    def setServer(self, url):
        """Use the server at ``url`` (a new session; the database settings carry over)."""
        self.close()
        self.session = ScarSession(url, auto_export=self.autoExport,
                                   log=lambda message: logging.info("CineScar: %s", message))
        if self.databaseEnabled and self.databaseLocation:
            self.session.set_database(self.databaseLocation)

    def requireSession(self):
        if self.session is None:
            raise RuntimeError("Not connected: enter the server address and click Check connection.")
        return self.session

    def setDatabaseLocation(self, location):
        self.databaseLocation = (location or "").strip() or None
        if self.session is not None:
            self.session.set_database(self.databaseLocation if self.databaseEnabled else None)

    def setAutoExport(self, enabled):
        self.autoExport = bool(enabled)
        if self.session is not None:
            self.session.auto_export = self.autoExport

    @staticmethod
    def sqlalchemyAvailable():
        try:
            importlib.import_module("sqlalchemy")
        except ImportError:
            return False
        return True

    def ensureDatabase(self, ask=True, why="", confirm=None, install=None):
        """Make the results database usable: SQLAlchemy present (installed after asking), location set."""
        if not self.databaseLocation:
            return False
        if not self.sqlalchemyAvailable():
            if not ask:
                return False
            confirm = confirm or slicer.util.confirmOkCancelDisplay
            question = (f"{why}\n\n" if why else "") + (
                "The results database needs the Python package SQLAlchemy, which is not installed in Slicer's "
                f"Python. Install it now ({SQLALCHEMY_REQUIREMENT}, about 3 MB from PyPI)?")
            if not confirm(question):
                return False
            (install or self.installSqlAlchemy)()
            importlib.invalidate_caches()
            if not self.sqlalchemyAvailable():
                raise RuntimeError("SQLAlchemy was installed but cannot be imported; restart Slicer and try again.")
        self.databaseEnabled = True
        if self.session is not None and not self.session.has_database:
            self.session.set_database(self.databaseLocation)
        return True

    @staticmethod
    def installSqlAlchemy():
        slicer.util.pip_install(SQLALCHEMY_REQUIREMENT)

    # ---------------------------------------------------------------- server (worker)

    def connect(self, progress=None, cancel=None):
        """(worker) Check the server and list its studies; returns (ServerStatus, [StudyEntry])."""
        session = self.requireSession()
        if progress:
            progress(None, f"asking {session.client.url} what it offers")
        status = session.connect()
        return status, session.list_studies()

    def importDicomFolder(self, folder, progress=None, cancel=None):
        """(worker) Send a DICOM folder to the datastore; returns (DicomImport, ServerStatus, [StudyEntry])."""
        imported = self.requireSession().import_dicom_folder(folder, progress=progress, cancel=cancel)
        return (imported, *self.connect())

    def detect(self, imageId=None, volume=None, mcSamples=None, progress=None, cancel=None):
        """(worker) Detection on a datastore study or on a cine from the scene (a Volume4D)."""
        session = self.requireSession()
        return session.detect(imageId, volume=volume, mc_samples=mcSamples, progress=progress, cancel=cancel)

    def dicomStudyOf(self, node):
        """(GUI thread: Slicer's DICOM database belongs to it) The Study Instance UID of a node loaded from the DICOM
        database and the study's files there (all series; whether they are on disk is checked if an upload is needed)."""
        database = getattr(slicer, "dicomDatabase", None)
        studyUid = dicom_study.study_of_volume(database, node)
        return studyUid, dicom_study.study_files(database, studyUid, missing_ok=True)

    def detectDicomStudy(self, studyUid, files, mcSamples=None, progress=None, cancel=None):
        """(worker) Detection by Study Instance UID (a PACS-backed server stores the results on the PACS); the study's
        files are uploaded first only if the server does not have it."""
        return dicom_study.detect_dicom_study(self.requireSession(), files, studyUid, mc_samples=mcSamples,
                                              progress=progress, cancel=cancel)

    def submitCorrection(self, correction, progress=None, cancel=None):
        """(worker) Send (or keep for later) a correction."""
        nSlices = self.detection.n_slices if self.detection is not None else None
        return self.requireSession().submit_correction(correction, n_slices=nSlices, progress=progress, cancel=cancel)

    def sendWaitingCorrections(self, progress=None, cancel=None):
        """(worker)"""
        return self.requireSession().flush_queue(progress=progress, cancel=cancel)

    def lastPick(self):
        """The server's last next-study answer (with its ``reason``), or None."""
        return self.session.last_pick if self.session is not None else None

    def nextStudy(self, progress=None, cancel=None):
        """(worker) The id of the most uncertain study without a label, or None."""
        if progress:
            progress(None, "asking the server for the most uncertain study")
        return self.requireSession().next_study("most_uncertain", progress=progress, cancel=cancel)

    def retrain(self, options, progress=None, cancel=None):
        """(worker) Start training and wait until the new model is live (or the training failed)."""
        session = self.requireSession()
        self.trainingRun = session.start_training(options)
        return session.wait_for_training(self.trainingRun, progress=progress, cancel=cancel)

    def stopTraining(self, onError=None):
        """Ask the server to stop the training, without blocking the caller."""
        session, run = self.requireSession(), self.trainingRun

        def stop():
            try:
                session.stop_training(run)
            except Exception as exc:  # noqa: BLE001 - reported, nothing else to do
                if onError:
                    onError(f"Could not stop the training: {exc}")

        threading.Thread(target=stop, name="cinescar-stop-training", daemon=True).start()

    # ---------------------------------------------------------------- scene (GUI thread)

    def browserForSequence(self, sequenceNode):
        if hasattr(slicer, "modules") and hasattr(slicer.modules, "sequences"):
            browser = slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(sequenceNode)
            if browser is not None:
                return browser
        for sequence, browser in mrml.findCineSequences(sequenceNode.GetScene()):
            if sequence is sequenceNode:
                return browser
        return None

    def cineFromSequence(self, sequenceNode, browserNode=None):
        return mrml.volume4DFromSequence(sequenceNode, browserNode)

    def showDetection(self, detection, cineSequence=None, browser=None):
        """Put the cine, the attention overlay, the score table and the chart in the scene and in the views.

        The nodes of the previous result are removed first (the user's own cine sequence stays)."""
        if self.nodes is not None:
            mrml.removeScarNodes(self.nodes)
            self.nodes = None
        self.detection = detection
        self.nodes = mrml.loadDetection(
            detection.result,
            detection.attention,
            cine=detection.cine if cineSequence is None else None,
            cineSequence=cineSequence,
            browser=browser,
            name=detection.image_id or None,
            opacity=self.opacity,
            threshold=self.threshold,
        )
        background, foreground = self.nodes.cineProxy, self.nodes.attentionProxy
        self.bullseye = segments.BullseyeState.from_result(detection.result, ijk_to_ras=self._ijkToRas(background))
        mrml.showInSliceViews(background, foreground, self.opacity)
        if background is not None:
            mrml.alignSliceViewToVolume(background, "Red")
        if hasattr(slicer, "app") and hasattr(slicer, "modules"):  # the application only (not slicer-core)
            slicer.util.setSliceViewerLayers(background=background, foreground=foreground,
                                             foregroundOpacity=self.opacity, fit=True)
            slicer.modules.sequences.setToolBarActiveBrowserNode(self.nodes.browser)
        return self.nodes

    @staticmethod
    def _ijkToRas(volumeNode):
        """The volume's IJKToRAS matrix as a numpy array (None without a volume): it gives the base-apex order."""
        if volumeNode is None:
            return None
        import vtk

        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return slicer.util.arrayFromVTKMatrix(matrix)

    def forgetNodes(self):
        self.nodes = None
        self.detection = None
        self.bullseye = None

    def selectSegment(self, segment):
        """Select an AHA segment and show the slice for it (CineScarLib.segments rule); returns that slice."""
        if self.bullseye is None:
            raise RuntimeError("No result yet: run a detection first.")
        self.bullseye.selected = int(segment)
        row = self.bullseye.slice_of_segment(segment)
        if row is not None:
            self.jumpToSlice(row)
        return row

    def clickBullseye(self, x, y, size):
        """A click at pixel (x, y) of the drawn bullseye: select the segment there, show its slice and cycle its
        label (not assessed -> scar -> no scar -> not assessed). Returns (segment, slice), None off the disc."""
        if self.bullseye is None:
            return None
        segment = self.bullseye.segment_at_pixel(x + 0.5, y + 0.5, size)
        if segment is None:
            return None
        row = self.selectSegment(segment)
        self.bullseye.cycle(segment)
        return segment, row

    def bullseyePng(self, size):
        """The bullseye of the shown detection as PNG bytes, or None before a detection."""
        return None if self.bullseye is None else segments.png_bytes(self.bullseye.render(size))

    def setOverlay(self, opacity, threshold):
        self.opacity, self.threshold = float(opacity), float(threshold)
        if self.nodes is not None and self.nodes.attentionProxy is not None:
            mrml.setupAttentionDisplay(self.nodes.attentionProxy, opacity=self.opacity, threshold=self.threshold)
            mrml.setOverlayOpacity(self.opacity)

    def jumpToSlice(self, row):
        """Show slice ``row`` of the score table in the slice views; returns its RAS centre (None if unknown)."""
        if self.nodes is None:
            return None
        ras = mrml.sliceCenterFromTable(self.nodes.table, row)
        if ras is not None:
            mrml.jumpToSlice(ras)
        return ras

    def showChart(self):
        if self.nodes is None:
            raise RuntimeError("No result yet: run a detection first.")
        slicer.modules.plots.logic().ShowChartInLayout(self.nodes.chart)

    def copyPredictedLabels(self):
        if self.detection is None or self.nodes is None:
            raise RuntimeError("No result yet: run a detection first.")
        mrml.setReviewerLabels(self.nodes.table, self.detection.predicted_slice_labels())

    def makeCorrection(self, studyLabel, reviewer, source="visual", comment=""):
        """A correction of the shown detection, slice labels read from the table's Reviewer column."""
        if self.detection is None or self.nodes is None:
            raise RuntimeError("No result yet: run a detection first.")
        sliceLabels = mrml.readReviewerLabels(self.nodes.table)
        segmentLabels = None
        if self.bullseye is not None:
            self.bullseye.check(int(studyLabel))
            segmentLabels = self.bullseye.segment_labels()
        return self.requireSession().make_correction(self.detection, study_label=int(studyLabel),
                                                     slice_labels=sliceLabels, reviewer=reviewer, source=source,
                                                     comment=comment, segment_labels=segmentLabels)

    # ---------------------------------------------------------------- results database (GUI thread)

    def pendingCount(self):
        if self.session is None or not self.databaseEnabled or not self.sqlalchemyAvailable():
            return 0
        try:
            return len(self.session.pending_corrections())
        except Exception:  # noqa: BLE001 - a count for display only
            return 0

    def exportDetection(self):
        if self.detection is None:
            raise RuntimeError("No result yet: run a detection first.")
        return self.requireSession().export_detection(self.detection)

    def exportCsv(self, folder):
        return self.requireSession().export_csv(folder)

    def databaseSummary(self):
        try:
            counts = self.requireSession().db.counts()
        except Exception as exc:  # noqa: BLE001 - for display only
            return f"(database: {exc})"
        return f"{counts.get('detections', 0)} detections, {counts.get('corrections', 0)} corrections in the database."


#
# CineScarTest
#


class CineScarTest(ScriptedLoadableModuleTest):
    """Self-test in Slicer ("Reload and Test", or the Self Tests module).

    ``test_CineScarScene`` needs nothing but Slicer. ``test_CineScarServer`` needs a
    running ST-RAN Scar server: set CINESCAR_TEST_SERVER_URL (e.g. http://127.0.0.1:8000)
    before starting Slicer; without it the test says so and passes without running.
    It only reads from the server unless CINESCAR_TEST_ALLOW_WRITES=1 (then it also
    submits a correction for the first study).
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_CineScarScene()
        self.setUp()
        self.test_CineScarServer()

    def test_CineScarScene(self):
        import numpy as np
        from CineScarLib.nifti import Volume4D, nifti_bytes, read_nifti
        from CineScarLib.session import Detection

        self.delayDisplay("Building a synthetic cine and detection")
        affine = np.array([[1.4, 0, 0, -60], [0, 1.4, 0, -50], [0, 0, 8, -20], [0, 0, 0, 1.0]])
        t, k, j, i = 10, 5, 48, 48
        yy, xx = np.mgrid[0:j, 0:i]
        cine = np.zeros((t, k, j, i), np.int16)
        att = np.zeros((t, k, j, i), np.float32)
        for p in range(t):
            radius = 10 + 4 * np.cos(2 * np.pi * p / t)
            ring = np.abs(np.hypot(yy - 24, xx - 24) - radius - 4) < 3
            cine[p][:, ring] = 600
            att[p][:, ring & (xx > 24)] = 0.8
        volume = Volume4D(cine, affine, 40.0)
        attention = read_nifti(nifti_bytes(Volume4D(att, affine, 40.0)))
        result = {"detection_id": "selftest", "image_id": "selftest", "study": {"study_uid": "2.25.1", "slices": k},
                  "study_probability": 0.7, "threshold": 0.5, "prediction": 1, "prediction_label": "scar",
                  "slice_probabilities": [0.2, 0.6, 0.9, None, 0.4],
                  "model": {"name": "stran", "version": "test", "sha256": "0" * 64}}
        logic = CineScarLogic()
        nodes = logic.showDetection(Detection(result, "selftest", attention, volume))
        self.assertEqual(nodes.cineSequence.GetNumberOfDataNodes(), t)
        self.assertEqual(nodes.attentionSequence.GetNumberOfDataNodes(), t)
        nodes.browser.SetSelectedItemNumber(3)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(nodes.attentionProxy), att[3]))
        self.assertEqual(nodes.table.GetNumberOfRows(), k)
        self.assertIsNotNone(logic.jumpToSlice(2))
        logic.copyPredictedLabels()
        self.assertEqual(mrml.readReviewerLabels(nodes.table), [0, 1, 1, None, 0])
        logic.showChart()
        self.delayDisplay("Playing the cine with the overlay")
        nodes.browser.SetPlaybackActive(True)
        self.delayDisplay("(playing)", 1500)
        nodes.browser.SetPlaybackActive(False)
        self.delayDisplay("Scene test passed")

    def test_CineScarServer(self):
        url = os.environ.get("CINESCAR_TEST_SERVER_URL", "").strip()
        if not url:
            self.delayDisplay("Server test not run: set CINESCAR_TEST_SERVER_URL to a running ST-RAN Scar server "
                              "(e.g. http://127.0.0.1:8000) and start Slicer again.")
            return
        logic = CineScarLogic()
        logic.setServer(url)
        self.delayDisplay(f"Connecting to {url}")
        status, studies = logic.connect()
        self.assertTrue(studies, "the server's datastore has no studies")
        self.delayDisplay(f"{status.summary()}: detecting on {studies[0].image_id}")
        detection = logic.detect(imageId=studies[0].image_id, mcSamples=2)
        self.assertIsNotNone(detection.attention)
        nodes = logic.showDetection(detection)
        self.assertEqual(nodes.cineSequence.GetNumberOfDataNodes(), detection.result["study"]["phases"])
        self.assertEqual(nodes.table.GetNumberOfRows(), len(detection.slice_probabilities))
        with self.assertRaises(Cancelled):
            from CineScarLib.client import CancelToken

            token = CancelToken()
            token.cancel()
            logic.detect(imageId=studies[0].image_id, cancel=token)
        if os.environ.get("CINESCAR_TEST_ALLOW_WRITES") == "1":
            logic.copyPredictedLabels()
            labels = mrml.readReviewerLabels(nodes.table)
            studyLabel = 1 if 1 in labels else int(detection.result["prediction"])
            correction = logic.makeCorrection(studyLabel, reviewer="CineScar self-test")
            outcome = logic.submitCorrection(correction)
            self.assertEqual(outcome.status, "sent")
        self.delayDisplay("Server test passed")
