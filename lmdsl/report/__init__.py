"""Reports people look at: one self-contained HTML file (plotly.js inlined, no network needed to
open it) per compile (`compile_with_report`, `build_report`) or evaluation (`evaluation_report`).
Needs the `report` extra (plotly); a missing one, or a file that cannot be written, is a `ReportError`."""

from lmdsl.report.compile import CompileReport, build_report, compile_with_report
from lmdsl.report.evaluation import EvaluationReport, evaluation_report

__all__ = ["CompileReport", "EvaluationReport", "build_report", "compile_with_report", "evaluation_report"]
