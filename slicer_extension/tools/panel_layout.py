"""One description of the CineScar panel -> ``Resources/UI/CineScar.ui`` (Qt Designer XML) and a drawing of it.

    python slicer_extension/tools/panel_layout.py        # rewrite the .ui, the icon and docs/images/cinescar-panel.png

The .ui is generated (and checked to be up to date by tests/slicer/test_cinescar_module.py)
so that the panel drawing in the docs always shows what the module builds. The drawing
needs matplotlib and the icon Pillow (both in the Slicer test venv); the .ui needs only
the standard library. Not part of the installed extension.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
MODULE = HERE.parent / "CineScar"
UI_PATH = MODULE / "Resources" / "UI" / "CineScar.ui"
ICON_PATH = MODULE / "Resources" / "Icons" / "CineScar.png"
DRAWING_PATH = HERE.parents[1] / "docs" / "images" / "cinescar-panel.png"


@dataclass
class W:
    """One widget: Qt class, objectName, and its Designer properties."""

    cls: str
    name: str
    text: str = ""
    props: dict = field(default_factory=dict)
    items: tuple = ()
    tip: str = ""


@dataclass
class Row:
    label: str = ""  # "" -> the widgets span both columns
    widgets: tuple = ()


@dataclass
class Section:
    name: str
    title: str
    rows: tuple
    collapsed: bool = False


SECTIONS = (
    Section("serverCollapsibleButton", "Server", (
        Row("Server address:", (W("QLineEdit", "serverUrlLineEdit", props={"placeholderText": "http://127.0.0.1:8000"},
                                  tip="Address of the MONAI Label server running the ST-RAN Scar app (kept in the settings)"),)),
        Row("", (W("QPushButton", "checkConnectionButton", "Check connection",
                   tip="Ask the server what it offers; the answer (or the exact failure) is shown below"),)),
        Row("", (W("QLabel", "connectionStatusLabel", "Not connected.", props={"wordWrap": True,
                                                                             "textInteractionFlags": "selectable"}),)),
    )),
    Section("studyCollapsibleButton", "Study", (
        Row("", (W("QRadioButton", "datastoreRadioButton", "Study on the server", props={"checked": True}),)),
        Row("Study:", (W("QComboBox", "studyComboBox", tip="Studies in the server's datastore; not yet reviewed first"),
                       W("QPushButton", "refreshStudiesButton", "Refresh"))),
        Row("", (W("QPushButton", "openDicomFolderButton", "Open DICOM folder...", props={"enabled": False},
                   tip="Send a DICOM study folder to the server's datastore and select it; stray unreadable files "
                       "are left out and listed below"),)),
        Row("", (W("QRadioButton", "sceneRadioButton", "Cine loaded in Slicer (uploaded to the server)"),)),
        Row("Cine sequence:", (W("qMRMLNodeComboBox", "sequenceSelector",
                                 props={"nodeTypes": ["vtkMRMLSequenceNode"], "noneEnabled": True, "addEnabled": False,
                                        "removeEnabled": False, "renameEnabled": False, "enabled": False},
                                 tip="A volume sequence, e.g. a cine loaded from the DICOM browser"),)),
        Row("", (W("QPushButton", "detectDicomStudyButton", "Detect on DICOM study", props={"enabled": False},
                   tip="For a cine loaded from Slicer's DICOM database (e.g. pulled from the PACS in the DICOM "
                       "browser): detect on its study by Study Instance UID. A server connected to the PACS fetches "
                       "it there and stores the results back on the PACS; any other server gets the study's files "
                       "once."),)),
        Row("MC samples:", (W("QSpinBox", "mcSamplesSpinBox", props={"minimum": 0, "maximum": 64, "value": 8},
                              tip="Monte Carlo dropout passes for the uncertainty (0 = none; more = slower)"),)),
        Row("", (W("QPushButton", "detectButton", "Detect scar", props={"enabled": False}),
                 W("QPushButton", "cancelButton", "Cancel", props={"enabled": False}))),
        Row("", (W("QProgressBar", "progressBar", props={"value": 0, "visible": False}),)),
        Row("", (W("QLabel", "progressLabel", "", props={"wordWrap": True}),)),
    )),
    Section("resultCollapsibleButton", "Result", (
        Row("Scar probability:", (W("QLabel", "probabilityLabel", "-"),)),
        Row("Verdict:", (W("QLabel", "verdictLabel", "-"),)),
        Row("Uncertainty:", (W("QLabel", "uncertaintyLabel", "-"),)),
        Row("Model:", (W("QLabel", "modelLabel", "-", props={"textInteractionFlags": "selectable"}),)),
        Row("Cine:", (W("qMRMLSequenceBrowserPlayWidget", "playWidget"),)),
        Row("Phase:", (W("qMRMLSequenceBrowserSeekWidget", "seekWidget"),)),
        Row("Overlay opacity:", (W("ctkSliderWidget", "opacitySlider",
                                   props={"minimum": 0.0, "maximum": 1.0, "singleStep": 0.05, "value": 0.5}),)),
        Row("Hide attention below:", (W("ctkSliderWidget", "thresholdSlider",
                                        props={"minimum": 0.0, "maximum": 1.0, "singleStep": 0.05, "value": 0.2}),)),
        Row("", (W("qMRMLTableView", "scoreTableView", props={"minimumHeight": 160},
                   tip="Click a row to show that slice; type scar / no scar in the Reviewer label column"),)),
        Row("AHA segments:", (W("QLabel", "bullseyeLabel", "-",
                                tip="Scar probability per AHA segment (yellow low, red high). Click a segment: the "
                                    "cine shows its slice, and the segment's label cycles: scar (black dot), "
                                    "no scar (white dot), not assessed"),)),
        Row("", (W("QPushButton", "showChartButton", "Show bar chart", props={"enabled": False}),)),
    )),
    Section("reviewCollapsibleButton", "Review", (
        Row("Study label:", (W("QComboBox", "studyLabelComboBox", items=("(choose)", "scar", "no scar")),)),
        Row("Slice labels:", (W("QPushButton", "copyPredictionButton", "Copy the predicted labels",
                                tip="Fill the Reviewer label column from the prediction, then correct it"),)),
        Row("Reviewer:", (W("QLineEdit", "reviewerLineEdit", props={"placeholderText": "your name"}),)),
        Row("Source:", (W("QComboBox", "sourceComboBox", items=("LGE", "visual"),
                          tip="LGE: labels read from late gadolinium enhancement images; visual: from the cine"),)),
        Row("Comment:", (W("QLineEdit", "commentLineEdit", props={"placeholderText": "optional; no patient identifiers"}),)),
        Row("", (W("QPushButton", "submitButton", "Submit correction", props={"enabled": False}),
                 W("QPushButton", "nextStudyButton", "Next study", props={"enabled": False},
                   tip="Load and detect the study the model is least sure about"))),
        Row("", (W("QLabel", "queueLabel", "", props={"wordWrap": True}),
                 W("QPushButton", "sendQueueButton", "Send waiting corrections", props={"visible": False}))),
    )),
    Section("trainingCollapsibleButton", "Retrain", (
        Row("Epochs:", (W("QSpinBox", "epochsSpinBox", props={"minimum": 1, "maximum": 1000, "value": 5}),)),
        Row("", (W("QPushButton", "retrainButton", "Retrain on the reviewed studies", props={"enabled": False}),
                 W("QPushButton", "stopTrainingButton", "Stop", props={"enabled": False}))),
        Row("", (W("QProgressBar", "trainingProgressBar", props={"value": 0}),)),
        Row("", (W("QLabel", "trainingStatusLabel", "", props={"wordWrap": True}),)),
    ), collapsed=True),
    Section("databaseCollapsibleButton", "Results database", (
        Row("Database file:", (W("ctkPathLineEdit", "databasePathLineEdit", props={"filters": "files"},
                                 tip="SQLite file (created if missing); one database for all your studies"),)),
        Row("", (W("QCheckBox", "autoExportCheckBox", "Store every detection automatically"),)),
        Row("", (W("QPushButton", "exportButton", "Store this result", props={"enabled": False}),
                 W("QPushButton", "exportCsvButton", "Export CSV..."))),
        Row("", (W("QLabel", "databaseStatusLabel", "", props={"wordWrap": True}),)),
    ), collapsed=True),
)

CUSTOM_WIDGETS = {
    "qMRMLWidget": ("QWidget", "qMRMLWidget.h", True),
    "ctkCollapsibleButton": ("QWidget", "ctkCollapsibleButton.h", True),
    "ctkSliderWidget": ("QWidget", "ctkSliderWidget.h", False),
    "ctkPathLineEdit": ("QWidget", "ctkPathLineEdit.h", False),
    "qMRMLNodeComboBox": ("QWidget", "qMRMLNodeComboBox.h", False),
    "qMRMLSequenceBrowserPlayWidget": ("qMRMLWidget", "qMRMLSequenceBrowserPlayWidget.h", False),
    "qMRMLSequenceBrowserSeekWidget": ("qMRMLWidget", "qMRMLSequenceBrowserSeekWidget.h", False),
    "qMRMLTableView": ("QTableView", "qMRMLTableView.h", False),
}


def all_widgets() -> list[W]:
    return [w for s in SECTIONS for r in s.rows for w in r.widgets]


# ----------------------------------------------------------------------------- .ui


def _prop(name: str, value: object, cls: str) -> str:
    if name == "textInteractionFlags":
        return f'<property name="{name}"><set>Qt::TextSelectableByMouse</set></property>'
    if name == "filters":
        return f'<property name="{name}"><set>ctkPathLineEdit::Files</set></property>'
    if isinstance(value, bool):
        return f'<property name="{name}"><bool>{str(value).lower()}</bool></property>'
    if isinstance(value, int):
        return f'<property name="{name}"><number>{value}</number></property>'
    if isinstance(value, float):
        return f'<property name="{name}"><double>{value}</double></property>'
    if isinstance(value, list):
        strings = "".join(f"<string>{escape(v)}</string>" for v in value)
        return f'<property name="{name}"><stringlist>{strings}</stringlist></property>'
    return f'<property name="{name}"><string>{escape(str(value))}</string></property>'


def _widget(w: W, indent: str) -> list[str]:
    out = [f'{indent}<widget class="{w.cls}" name="{w.name}">']
    props = dict(w.props)
    props.pop("visible", None)  # set in code (Designer has no 'visible' property)
    if w.text:
        props = {"text": w.text, **props}
    if w.tip:
        props["toolTip"] = w.tip
    if w.cls == "QProgressBar":
        props.setdefault("textVisible", True)
    for key, value in props.items():
        out.append(f"{indent} {_prop(key, value, w.cls)}")
    for item in w.items:
        out.append(f'{indent} <item><property name="text"><string>{escape(item)}</string></property></item>')
    out.append(f"{indent}</widget>")
    return out


def ui_xml() -> str:
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<!-- Generated by slicer_extension/tools/panel_layout.py: edit the layout there, not here. -->",
        '<ui version="4.0">',
        " <class>CineScar</class>",
        ' <widget class="qMRMLWidget" name="CineScar">',
        '  <layout class="QVBoxLayout" name="mainLayout">',
    ]
    for section in SECTIONS:
        lines += [
            "   <item>",
            f'    <widget class="ctkCollapsibleButton" name="{section.name}">',
            f'     <property name="text"><string>{escape(section.title)}</string></property>',
            f'     <property name="collapsed"><bool>{str(section.collapsed).lower()}</bool></property>',
            f'     <layout class="QFormLayout" name="{section.name}Layout">',
        ]
        for r, row in enumerate(section.rows):
            if row.label:
                lines += [f'      <item row="{r}" column="0">',
                          f'       <widget class="QLabel" name="{row.widgets[0].name}Label">',
                          f'        <property name="text"><string>{escape(row.label)}</string></property>',
                          "       </widget>", "      </item>"]
                place = f'row="{r}" column="1"'
            else:
                place = f'row="{r}" column="0" colspan="2"'
            lines.append(f"      <item {place}>")
            if len(row.widgets) == 1:
                lines += _widget(row.widgets[0], "       ")
            else:
                lines.append(f'       <layout class="QHBoxLayout" name="{row.widgets[0].name}Row">')
                for w in row.widgets:
                    lines += ["        <item>", *_widget(w, "         "), "        </item>"]
                lines.append("       </layout>")
            lines.append("      </item>")
        lines += ["     </layout>", "    </widget>", "   </item>"]
    lines += [
        "   <item>",
        '    <spacer name="verticalSpacer"><property name="orientation"><enum>Qt::Vertical</enum></property>'
        '<property name="sizeHint" stdset="0"><size><width>20</width><height>40</height></size></property></spacer>',
        "   </item>",
        "  </layout>",
        " </widget>",
        " <customwidgets>",
    ]
    for cls, (base, header, container) in CUSTOM_WIDGETS.items():
        lines.append(f"  <customwidget><class>{cls}</class><extends>{base}</extends><header>{header}</header>"
                     + ("<container>1</container>" if container else "") + "</customwidget>")
    lines += [
        " </customwidgets>",
        " <resources/>",
        " <connections>",
        "  <connection><sender>CineScar</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>"
        "<receiver>sequenceSelector</receiver><slot>setMRMLScene(vtkMRMLScene*)</slot></connection>",
        "  <connection><sender>CineScar</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>"
        "<receiver>playWidget</receiver><slot>setMRMLScene(vtkMRMLScene*)</slot></connection>",
        "  <connection><sender>CineScar</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>"
        "<receiver>seekWidget</receiver><slot>setMRMLScene(vtkMRMLScene*)</slot></connection>",
        "  <connection><sender>CineScar</sender><signal>mrmlSceneChanged(vtkMRMLScene*)</signal>"
        "<receiver>scoreTableView</receiver><slot>setMRMLScene(vtkMRMLScene*)</slot></connection>",
        " </connections>",
        "</ui>",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- icon and drawing


def make_icon(path: Path = ICON_PATH) -> Path:
    """128x128: a short-axis ring (myocardium) with a bright scar arc, on Slicer's dark-blue tile."""
    import numpy as np
    from PIL import Image

    n = 128
    y, x = np.mgrid[0:n, 0:n].astype(float)
    cx, cy = 64.0, 66.0
    r = np.hypot(x - cx, y - cy)
    theta = np.arctan2(y - cy, x - cx)
    img = np.zeros((n, n, 4), np.float64)
    img[..., :3] = (0.16, 0.23, 0.38)
    img[..., 3] = 1.0
    tile = (np.abs(x - 63.5) < 60) & (np.abs(y - 63.5) < 60)
    img[~tile, 3] = 0.0
    blood = r < 24
    ring = (r >= 24) & (r < 40)
    img[blood, :3] = (0.93, 0.93, 0.93)
    img[ring, :3] = (0.45, 0.47, 0.50)
    scar = ring & (theta > 0.2) & (theta < 1.6)
    img[scar, :3] = (1.0, 0.55, 0.05)
    core = ring & (theta > 0.5) & (theta < 1.3) & (r > 28) & (r < 37)
    img[core, :3] = (1.0, 0.9, 0.2)
    rgba = (img * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def draw_panel(path: Path = DRAWING_PATH) -> Path:
    """A matplotlib drawing of the panel as laid out above (labelled as a drawing, not a screenshot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, Rectangle

    sample = {
        "serverUrlLineEdit": "http://127.0.0.1:8000",
        "connectionStatusLabel": "ST-RAN Scar 0.1.0: model 'scar' (sha256 3f9a0c1b2d4e), 12 studies",
        "studyComboBox": "case_0007 - not reviewed - 0.41",
        "sequenceSelector": "None",
        "progressLabel": "case_0007: scar (p = 0.812, uncertainty (std) 0.061)",
        "probabilityLabel": "0.812", "verdictLabel": "SCAR (threshold 0.50)",
        "uncertaintyLabel": "std 0.061, entropy 0.48 (mc_dropout, 8 samples)",
        "modelLabel": "stran 0.1.0, sha256 3f9a0c1b2d4e", "studyLabelComboBox": "scar",
        "reviewerLineEdit": "dr. A", "sourceComboBox": "LGE", "commentLineEdit": "",
        "queueLabel": "Sent. No corrections waiting.", "trainingStatusLabel": "Training epoch 3/5 (val_auc 0.812)",
        "databasePathLineEdit": "~/CineScar/results.sqlite",
        "databaseStatusLabel": "Stored. 14 detections, 6 corrections.",
    }
    rows_h = {"qMRMLTableView": 5.2, "QLabel": 0.9}
    width = 6.4
    total = sum(1.0 + sum(rows_h.get(r.widgets[0].cls, 1.0) for r in s.rows) for s in SECTIONS) + 1.6
    fig = plt.figure(figsize=(width, total * 0.3))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 100)
    ax.set_ylim(total, 0)
    ax.axis("off")
    ax.add_patch(Rectangle((0, 0), 100, total, color="#f3f3f3"))
    ax.text(50, 0.7, "CineScar panel (all sections expanded): a drawing generated from the .ui layout, not a screenshot",
            ha="center", va="center", fontsize=7.5, style="italic", color="#a00")
    y = 1.5

    def box(x0, x1, yy, h, face="white", edge="#999", radius=0.4):
        ax.add_patch(FancyBboxPatch((x0, yy + 0.12), x1 - x0, h - 0.24, boxstyle=f"round,pad=0,rounding_size={radius}",
                                    facecolor=face, edgecolor=edge, linewidth=0.6))

    def draw_widget(w, x0, x1, yy, h):
        cls = w.cls
        mid = yy + h / 2
        enabled = w.props.get("enabled", True) or w.name in ("submitButton", "nextStudyButton", "detectButton",
                                                               "retrainButton", "exportButton", "showChartButton",
                                                               "openDicomFolderButton")
        if cls == "QPushButton":
            box(x0, x1, yy, h, "#e8e8e8" if enabled else "#f0f0f0", "#888")
            ax.text((x0 + x1) / 2, mid, w.text, ha="center", va="center", fontsize=6.5, color="black" if enabled else "#aaa")
        elif cls in ("QLineEdit", "ctkPathLineEdit"):
            box(x0, x1, yy, h)
            text = sample.get(w.name) or w.props.get("placeholderText", "")
            ax.text(x0 + 1, mid, text, va="center", fontsize=6.2, color="black" if sample.get(w.name) else "#999")
            if cls == "ctkPathLineEdit":
                ax.text(x1 - 2, mid, "...", ha="center", va="center", fontsize=6.2)
        elif cls in ("QComboBox", "qMRMLNodeComboBox"):
            box(x0, x1, yy, h, "#fafafa")
            ax.text(x0 + 1, mid, sample.get(w.name, w.items[0] if w.items else ""), va="center", fontsize=6.2)
            ax.text(x1 - 2, mid, "v", ha="center", va="center", fontsize=6)
        elif cls == "QSpinBox":
            box(x0, x0 + 14, yy, h)
            ax.text(x0 + 1, mid, str(w.props.get("value", "")), va="center", fontsize=6.2)
        elif cls in ("QRadioButton", "QCheckBox"):
            checked = w.props.get("checked") or w.name == "autoExportCheckBox"
            marker = "o" if cls == "QRadioButton" else "s"
            ax.plot([x0 + 1.2], [mid], marker=marker, ms=5, mfc="#3a6" if checked else "white", mec="#555", mew=0.6)
            ax.text(x0 + 3, mid, w.text, va="center", fontsize=6.5)
        elif cls == "QProgressBar":
            box(x0, x1, yy, h)
            frac = 0.6 if w.name == "trainingProgressBar" else 1.0
            ax.add_patch(Rectangle((x0 + 0.3, yy + 0.2), (x1 - x0 - 0.6) * frac, h - 0.4, color="#5a9be0"))
            ax.text((x0 + x1) / 2, mid, f"{int(frac * 100)}%", ha="center", va="center", fontsize=6)
        elif cls == "ctkSliderWidget":
            value = float(w.props.get("value", 0))
            ax.plot([x0 + 1, x1 - 12], [mid, mid], color="#888", lw=1.5)
            ax.plot([x0 + 1 + (x1 - 13 - x0) * value], [mid], marker="o", ms=5, color="#4a7fc0")
            box(x1 - 10, x1, yy, h)
            ax.text(x1 - 9, mid, f"{value:.2f}", va="center", fontsize=6.2)
        elif cls == "qMRMLSequenceBrowserPlayWidget":
            for k, sym in enumerate(["|<", "<", "[]", ">", ">|", "loop", "20 fps"]):
                box(x0 + k * 8.5, x0 + k * 8.5 + 7.8, yy, h, "#e8e8e8", "#888")
                ax.text(x0 + k * 8.5 + 3.9, mid, sym, ha="center", va="center", fontsize=5.8)
        elif cls == "qMRMLSequenceBrowserSeekWidget":
            ax.plot([x0 + 1, x1 - 16], [mid, mid], color="#888", lw=1.5)
            ax.plot([x0 + 1 + (x1 - 17 - x0) * 0.35], [mid], marker="s", ms=5, color="#4a7fc0")
            ax.text(x1 - 15, mid, "time: 297.5 ms", va="center", fontsize=6)
        elif cls == "qMRMLTableView":
            cols = ["Slice", "Position (mm)", "Scar probability", "Predicted", "Reviewer label"]
            data = [["0", "-32.0", "0.12", "no scar", "no scar"], ["1", "-24.0", "0.35", "no scar", "no scar"],
                    ["2", "-16.0", "0.78", "scar", "scar"], ["3", "-8.0", "0.91", "scar", "scar"],
                    ["4", "0.0", "0.64", "scar", "no scar"], ["5", "8.0", "", "", ""]]
            box(x0, x1, yy, h, "white", "#999", 0.1)
            cw = (x1 - x0) / len(cols)
            rh = (h - 0.3) / (len(data) + 1)
            for c, title in enumerate(cols):
                ax.add_patch(Rectangle((x0 + c * cw, yy + 0.15), cw, rh, facecolor="#e4e4e4", edgecolor="#bbb", lw=0.4))
                ax.text(x0 + c * cw + cw / 2, yy + 0.15 + rh / 2, title, ha="center", va="center", fontsize=5.6, weight="bold")
            for rr, row in enumerate(data):
                yy2 = yy + 0.15 + rh * (rr + 1)
                face = "#cfe3ff" if rr == 3 else "white"
                for c, value in enumerate(row):
                    ax.add_patch(Rectangle((x0 + c * cw, yy2), cw, rh, facecolor=face, edgecolor="#ddd", lw=0.4))
                    color = "#b03000" if (c == 4 and rr == 4) else "black"
                    ax.text(x0 + c * cw + cw / 2, yy2 + rh / 2, value, ha="center", va="center", fontsize=5.8, color=color)
        else:  # QLabel
            text = sample.get(w.name, w.text)
            ax.text(x0 + 0.5, mid, text, va="center", fontsize=6.3, color="#224" if text != "-" else "#777")

    for section in SECTIONS:
        box(1, 99, y, 1.0, "#dcdcdc", "#aaa", 0.2)
        ax.text(3, y + 0.5, "v " + section.title, va="center", fontsize=7.5, weight="bold")
        y += 1.0
        for row in section.rows:
            h = rows_h.get(row.widgets[0].cls, 1.0)
            if row.label:
                ax.text(3, y + h / 2, row.label, va="center", fontsize=6.5)
                x0 = 30
            else:
                x0 = 3
            visible = [w for w in row.widgets if w.props.get("visible", True) or w.name == "progressBar"]
            span = (97 - x0) / max(len(visible), 1)
            for i, w in enumerate(visible):
                draw_widget(w, x0 + i * span + (0.5 if i else 0), x0 + (i + 1) * span - 0.5, y, h)
            y += h
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=160)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    UI_PATH.parent.mkdir(parents=True, exist_ok=True)
    UI_PATH.write_text(ui_xml(), encoding="utf-8")
    print(f"wrote {UI_PATH}")
    if "--ui-only" not in argv:
        print(f"wrote {make_icon()}")
        print(f"wrote {draw_panel()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
