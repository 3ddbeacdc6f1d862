"""What the user sees, for the app and notebooks alike: the service's events, results and reports, their text,
the metrics charts and the Models tab's actions. No Gradio objects here.
"""

from components.views.charts import (
    NO_DATA,
    MetricsDashboard,
    dashboard,
    duration_bin_labels,
    effectiveness_chart,
    empty_figure,
    failures_over_time_chart,
    oom_rescue_chart,
    pick_bucket_seconds,
    recovery_time_chart,
    runs_over_time_chart,
    success_rate_chart,
)
from components.views.models import ModelActions, model_choices, models_table
from components.views.presenters import (
    failure_markdown,
    result_markdown,
    scenario_markdown,
    summary_markdown,
    timeline_line,
)
from components.views.reports import (
    ALLOW_FALLBACK_STEP,
    EMBEDDED_MODEL_NOTE,
    GenerationResult,
    Reporter,
    ServiceEvent,
    ServiceEventKind,
)

__all__ = [
    "ALLOW_FALLBACK_STEP",
    "EMBEDDED_MODEL_NOTE",
    "GenerationResult",
    "MetricsDashboard",
    "ModelActions",
    "NO_DATA",
    "Reporter",
    "ServiceEvent",
    "ServiceEventKind",
    "dashboard",
    "duration_bin_labels",
    "effectiveness_chart",
    "empty_figure",
    "failure_markdown",
    "failures_over_time_chart",
    "model_choices",
    "models_table",
    "oom_rescue_chart",
    "pick_bucket_seconds",
    "recovery_time_chart",
    "result_markdown",
    "runs_over_time_chart",
    "scenario_markdown",
    "success_rate_chart",
    "summary_markdown",
    "timeline_line",
]
