"""The module's logic, without any GUI: :class:`ScarLogic` (``CineScarLogic`` in CineScar.py adds Slicer's base class).

Methods marked *(worker)* may run in a worker thread (:class:`~.jobs.Job`): they touch neither Qt nor MRML and
call :class:`~.session.ScarSession`. The others run on Slicer's main thread and build the scene with
:mod:`.mrml` (cine and map sequences, table, chart, slice views) and :mod:`.segments` (the AHA bullseye).
The results database is :class:`~.database.DatabaseMixin`. Needs ``slicer`` (the application, or the
slicer-core wheel in tests), no Qt.
"""

from __future__ import annotations

import logging
import threading

import slicer

from . import dicom_study, highlight, mrml, packages, scores, segments, sequences, study_report
from .database import DatabaseMixin
from .session import ScarSession


class ScarLogic(DatabaseMixin):
    """GUI-free. Methods marked (worker) may run in a worker thread: they touch neither Qt nor MRML."""

    def __init__(self):
        self.session = None
        self.detection = None
        self.nodes = None
        self.trainingRun = None
        self.bullseye = None  # CineScarLib.segments.BullseyeState of the shown detection
        self.highlightNode = None  # the outline of the selected AHA segment (CineScarLib.highlight)
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
        """(worker) The id of the next study to review (the server's ``random`` strategy: the best in the
        active-learning simulation, docs/active-learning.md), or None when every study has a label."""
        if progress:
            progress(None, "asking the server for the next study")
        return self.requireSession().next_study("random", progress=progress, cancel=cancel)

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
        for sequence, browser in sequences.findCineSequences(sequenceNode.GetScene()):
            if sequence is sequenceNode:
                return browser
        return None

    def cineFromSequence(self, sequenceNode, browserNode=None):
        return sequences.volume4DFromSequence(sequenceNode, browserNode)

    def showDetection(self, detection, cineSequence=None, browser=None):
        """Put the cine, the attention overlay, the score table and the chart in the scene and in the views.

        The nodes of the previous result are removed first (the user's own cine sequence stays)."""
        highlight.clearSegmentHighlight(self.highlightNode)
        self.highlightNode = None
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
        self.bullseye = segments.BullseyeState.from_result(
            detection.result, ijk_to_ras=None if background is None else sequences.affineFromVolumeNode(background))
        mrml.showInSliceViews(background, foreground, self.opacity)
        if background is not None:
            mrml.alignSliceViewToVolume(background, "Red")
        if hasattr(slicer, "app") and hasattr(slicer, "modules"):  # the application only (not slicer-core)
            slicer.util.setSliceViewerLayers(background=background, foreground=foreground,
                                             foregroundOpacity=self.opacity, fit=True)
            slicer.modules.sequences.setToolBarActiveBrowserNode(self.nodes.browser)
        return self.nodes

    def forgetNodes(self):
        self.nodes = None
        self.detection = None
        self.bullseye = None
        self.highlightNode = None

    def selectSegment(self, segment):
        """Select an AHA segment, show the slice for it (CineScarLib.segments rule) and outline the segment there
        when the result has a segment map; returns that slice."""
        if self.bullseye is None:
            raise RuntimeError("No result yet: run a detection first.")
        self.bullseye.selected = int(segment)
        row = self.bullseye.slice_of_segment(segment)
        if row is not None:
            self.jumpToSlice(row)
        mask = self.bullseye.segment_mask(segment)
        reference = None if self.nodes is None else (self.nodes.attentionProxy or self.nodes.cineProxy)
        if mask is not None and reference is not None:
            try:
                self.highlightNode = highlight.showSegmentHighlight(mask, reference, self.highlightNode)
            except ValueError as exc:  # a map on another grid: the slice is shown, without the outline
                logging.warning("CineScar: segment %s not outlined: %s", segment, exc)
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
        ras = scores.sliceCenterFromTable(self.nodes.table, row)
        if ras is not None:
            scores.jumpToSlice(ras)
        return ras

    def showChart(self):
        if self.nodes is None:
            raise RuntimeError("No result yet: run a detection first.")
        slicer.modules.plots.logic().ShowChartInLayout(self.nodes.chart)

    def copyPredictedLabels(self):
        if self.detection is None or self.nodes is None:
            raise RuntimeError("No result yet: run a detection first.")
        scores.setReviewerLabels(self.nodes.table, self.detection.predicted_slice_labels())

    def makeCorrection(self, studyLabel, reviewer, source="visual", comment=""):
        """A correction of the shown detection, slice labels read from the table's Reviewer column."""
        if self.detection is None or self.nodes is None:
            raise RuntimeError("No result yet: run a detection first.")
        sliceLabels = scores.readReviewerLabels(self.nodes.table)
        segmentLabels = None
        if self.bullseye is not None:
            self.bullseye.check(int(studyLabel))
            segmentLabels = self.bullseye.segment_labels()
        return self.requireSession().make_correction(self.detection, study_label=int(studyLabel),
                                                     slice_labels=sliceLabels, reviewer=reviewer, source=source,
                                                     comment=comment, segment_labels=segmentLabels)

    # ---------------------------------------------------------------- report

    def writeReport(self, folder, confirm=None, install=None):
        """Write the shown detection's report (``<id>.report.png`` and ``.pdf``, the page of ``stran detect
        --report``) into ``folder``; matplotlib is installed first if the user agrees. Returns the paths, or None
        when the user declined the install."""
        if self.detection is None:
            raise RuntimeError("No result yet: run a detection first.")
        if not packages.ensure("matplotlib", study_report.MATPLOTLIB_REQUIREMENT, study_report.INSTALL_QUESTION,
                               confirm=confirm, install=install):
            return None
        d = self.detection
        return study_report.write_study_report(d.result, d.cine, d.attention, folder, image_id=d.image_id)
