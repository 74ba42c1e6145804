"""The panel's decisions, without Qt (stdlib only): which widget's signal calls which widget method, which
buttons are enabled, and the texts of the result, connection, corrections and training lines. A job's progress
bar and line are :class:`~.jobs.ProgressView`.

The widget (``CineScarWidget`` in CineScar.py) puts these values into the widgets of Resources/UI/CineScar.ui;
the widget names here (``SIGNALS``, the keys of :func:`enabled_buttons` and :func:`result_texts`) are theirs.
"""

from __future__ import annotations

WARNING_STYLE = "color: #b06000"  # the corrections line while some wait to be sent

SIGNALS = (  # (widget in the .ui, its signal, the CineScarWidget method it calls)
    ("checkConnectionButton", "clicked(bool)", "onCheckConnection"),
    ("serverUrlLineEdit", "returnPressed()", "onCheckConnection"),
    ("refreshStudiesButton", "clicked(bool)", "onCheckConnection"),
    ("openDicomFolderButton", "clicked(bool)", "onOpenDicomFolder"),
    ("datastoreRadioButton", "toggled(bool)", "onSourceChanged"),
    ("sequenceSelector", "currentNodeChanged(vtkMRMLNode*)", "onSourceChanged"),
    ("sceneRadioButton", "toggled(bool)", "onSourceChanged"),
    ("detectButton", "clicked(bool)", "onDetect"),
    ("detectDicomStudyButton", "clicked(bool)", "onDetectDicomStudy"),
    ("cancelButton", "clicked(bool)", "onCancel"),
    ("opacitySlider", "valueChanged(double)", "onOverlayChanged"),
    ("thresholdSlider", "valueChanged(double)", "onOverlayChanged"),
    ("scoreTableView", "clicked(QModelIndex)", "onTableClicked"),
    ("showChartButton", "clicked(bool)", "onShowChart"),
    ("reportButton", "clicked(bool)", "onReport"),
    ("copyPredictionButton", "clicked(bool)", "onCopyPrediction"),
    ("submitButton", "clicked(bool)", "onSubmit"),
    ("nextStudyButton", "clicked(bool)", "onNextStudy"),
    ("sendQueueButton", "clicked(bool)", "onSendQueue"),
    ("retrainButton", "clicked(bool)", "onRetrain"),
    ("stopTrainingButton", "clicked(bool)", "onStopTraining"),
    ("exportButton", "clicked(bool)", "onExport"),
    ("exportCsvButton", "clicked(bool)", "onExportCsv"),
    ("autoExportCheckBox", "toggled(bool)", "onAutoExportToggled"),
    ("databasePathLineEdit", "currentPathChanged(QString)", "onDatabasePathChanged"),
    ("reviewerLineEdit", "editingFinished()", "onReviewerChanged"),
)


def enabled_buttons(*, busy: bool, connected: bool, shown: bool, training: bool, scene_source: bool,
                    source_ready: bool, from_dicom: bool) -> dict[str, bool]:
    """Which widgets are enabled: ``busy`` (an operation runs), ``connected`` (the server answered), ``shown`` (a
    result is shown), ``training`` (a training runs), ``scene_source`` (the cine comes from the scene, not the
    server), ``source_ready`` (a study or sequence is chosen), ``from_dicom`` (that sequence came from the DICOM
    database)."""
    ready = connected and not busy
    return {
        "checkConnectionButton": not busy,
        "refreshStudiesButton": not busy,
        "detectButton": ready and source_ready,
        "detectDicomStudyButton": ready and scene_source and from_dicom,
        "cancelButton": busy,
        "submitButton": shown and not busy,
        "copyPredictionButton": shown,
        "nextStudyButton": ready,
        "openDicomFolderButton": ready,
        "showChartButton": shown,
        "reportButton": shown and not busy,
        "exportButton": shown,
        "retrainButton": connected and not training,
        "stopTrainingButton": training,
        "sequenceSelector": scene_source,
    }


def connection_text(status, studies) -> str:
    """The server line after a connection: what it serves, how many studies, how many not reviewed."""
    open_ = sum(1 for s in studies if not s.labeled)
    return f"{status.summary()}; {len(studies)} studies ({open_} not reviewed)"


def result_texts(detection) -> dict[str, str | None]:
    """The *Result* lines of a detection, by widget name; ``uncertaintyLabel`` is None when it was not computed
    (MC samples = 0: the widget says so in the user's language)."""
    result = detection.result
    unc = result.get("uncertainty") or {}
    uncertainty = None
    if unc.get("std") is not None:
        uncertainty = (f"std {float(unc['std']):.3f}, entropy {float(unc.get('entropy') or 0):.2f} "
                       f"({unc.get('method', '?')}, {unc.get('samples', '?')} samples)")
    model = result.get("model") or {}
    return {
        "probabilityLabel": f"{detection.probability:.3f}",
        "verdictLabel": f"{detection.verdict.upper()} (threshold {detection.threshold:.2f})",
        "uncertaintyLabel": uncertainty,
        "modelLabel": f"{model.get('name', '?')} {model.get('version', '')}, sha256 {str(model.get('sha256', ''))[:12]}",
    }


def submitted_text(outcome) -> tuple[str, str]:
    """(text, style sheet) of the corrections line after a submission (a ``SubmitOutcome``)."""
    text = outcome.message
    if outcome.flushed:
        text += f" {len(outcome.flushed)} waiting correction(s) were delivered first."
    return text, WARNING_STYLE if outcome.status == "queued" else ""


def flushed_text(outcome) -> tuple[str, str]:
    """(text, style sheet) of the corrections line after sending the waiting ones (a ``FlushOutcome``)."""
    return outcome.message(), WARNING_STYLE if outcome.pending else ""


def training_text(progress) -> str:
    """The training line when the training ended (a ``TrainingProgress``): its message and float metrics."""
    shown = ", ".join(f"{k} {v:.3f}" for k, v in progress.metrics.items() if isinstance(v, float))
    return progress.message + (f" ({shown})" if shown else "")
