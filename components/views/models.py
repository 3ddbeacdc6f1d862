"""What the Models tab (and a notebook) shows and does: a status table and plain-language model actions.

Each action returns Markdown that says what happened; a failure is explained with the recovery catalogue (never
raw exception text). Nothing is deleted without an explicit ``apply_cleanup`` of a previewed plan, confirmed with
the bytes it frees; a clean-up never offers the configured default model nor a model a request is using.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from components.generation.families import family_for_model_id, tiny_model_ids
from components.generation.request import MODEL_ID_PATTERN
from components.store.catalog import CATALOG
from components.store.disk import CleanupPlan, plan_cleanup
from components.store.download import DownloadEvent, DownloadEventKind
from components.store.health import HealthTrigger
from components.store.integrity import quick_check
from components.store.model_store import ModelStore
from recovery.classify import Classifier
from recovery.errors import InvalidParameterError, KintsugiError
from recovery.messages import api_error, format_bytes

__all__ = [
    "CLEANUP_COLUMNS",
    "HEALTH_COLUMNS",
    "ModelActions",
    "cleanup_confirmation",
    "health_log",
    "model_choices",
    "models_in_use",
    "models_table",
    "picker_model_ids",
]

CLEANUP_COLUMNS = ["model", "revision", "refs", "frees", "why"]
HEALTH_COLUMNS = ["when", "model", "found by", "found", "done"]

_GB = 1_000_000_000


def models_table(store: ModelStore, *, check_remote: bool = False) -> pd.DataFrame:
    """One row per known model: status in the local cache, size, typical memory need, its last repair (what was
    found damaged, by what, and what was done: the health watch's background repairs included), notes."""
    rows = []
    for entry in CATALOG:
        state = store.availability.availability(entry.model_id, check_remote=check_remote)
        repairs = store.health.findings(entry.model_id)
        rows.append(
            {
                "model": entry.model_id,
                "status": state.status.value.replace("_", " "),
                "on disk": format_bytes(state.bytes_present) if state.bytes_present else "",
                "download": _download(state.bytes_expected, entry.download_gb),
                "tasks": ", ".join(task.value for task in entry.tasks),
                "typical VRAM": _vram(entry.runs_on_cpu, entry.min_vram_gb, entry.recommended_vram_gb),
                "last repair": repairs[-1].sentence() if repairs else "",
                "notes": entry.notes,
            }
        )
    return pd.DataFrame(rows)


def health_log(store: ModelStore) -> pd.DataFrame:
    """Every repair remembered since the app started, newest first: when, which model, what found the damage (a
    check before use, the health watch's schedule or a file change, the Models tab), which files and how they were
    damaged, and what was done."""
    rows = [
        {
            "when": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(finding.at)),
            "model": finding.repo_id,
            "found by": finding.trigger.value,
            "found": "; ".join(finding.problems),
            "done": (
                f"repaired ({', '.join(finding.repair.files)}); a full check of them passes"
                if finding.repair.ok
                else "not repaired: " + " ".join(finding.repair.steps)
            ),
        }
        for finding in reversed(store.health.findings())
    ]
    return pd.DataFrame(rows, columns=HEALTH_COLUMNS)


def picker_model_ids() -> list[str]:
    """Every model a picker offers: the catalogue's, then each family's built-in tiny model it does not list."""
    listed = [entry.model_id for entry in CATALOG]
    return listed + [model_id for model_id in tiny_model_ids() if model_id not in listed]


def _download(expected_bytes: int | None, catalogued_gb: float | None) -> str:
    """The hub's size when known, else the catalogue's (``None``: its sources do not state it)."""
    if expected_bytes:
        return format_bytes(expected_bytes)
    return "not stated" if catalogued_gb is None else format_bytes(catalogued_gb * _GB)


def _vram(runs_on_cpu: bool, least_gb: float | None, recommended_gb: float | None) -> str:
    if runs_on_cpu:
        return "CPU is fine"
    if least_gb is None:
        return "not stated"
    return f"{least_gb:g} GB" + (f"–{recommended_gb:g} GB" if recommended_gb is not None else " or more")


def model_choices(store: ModelStore) -> list[tuple[str, str]]:
    """(label, model id) pairs for a model picker: the catalogue (the embedded model first), each label with its
    local status, then every family's built-in tiny model the catalogue does not list (built on first use)."""
    table = models_table(store)
    choices = [
        (f"{row.model} — {row.status}" + (f" ({row.download})" if row.status == "missing" else ""), row.model)
        for row in table.itertuples()
    ]
    listed = {value for _label, value in choices}
    for model_id in tiny_model_ids():
        family = family_for_model_id(model_id)
        if model_id not in listed and family is not None:
            choices.append((f"{model_id} — built-in {family.label}, random weights", model_id))
    return choices


def models_in_use(journal: Any) -> set[str]:
    """The models of the requests a ``RequestJournal`` holds as accepted or running."""
    return {str(entry.request["model_id"]) for entry in journal.unfinished() if entry.request}


def cleanup_confirmation(plan: CleanupPlan | None) -> str:
    """The question asked before a previewed clean-up is applied: what goes, and the bytes it frees."""
    if plan is None or not plan.items:
        return "Nothing to delete: preview a clean-up first."
    models = sorted({item.repo_id for item in plan.items})
    return (
        f"**Delete {len(plan.items)} item(s) of {', '.join(models)} and free {format_bytes(plan.bytes_freed)}?** "
        "This cannot be undone: a deleted model is downloaded again when it is next used."
    )


@dataclass
class ModelActions:
    """Verify, repair, download, update, roll back and clean up, each answering in Markdown. ``default_model`` and
    the models ``in_use`` returns are never offered for deletion."""

    store: ModelStore
    data_dir: str | None = None
    default_model: str | None = None
    in_use: Callable[[], Iterable[str]] = field(default=lambda: ())

    def kept(self) -> set[str]:
        """Models a clean-up leaves alone now: the default one and those in use."""
        return {*self.in_use(), *([self.default_model] if self.default_model else [])}

    def quick_check(self, model_id: str) -> str:
        """Every file present with its size, every safetensors header sound (milliseconds)."""
        return self._explained(
            model_id,
            lambda: self._report("Quick check", quick_check(self.store.cache, self.store.health.manifest(model_id))),
        )

    def full_check(self, model_id: str) -> str:
        """The sha256 of every weight blob against its name, and git hashes of small files."""
        return self._explained(model_id, lambda: self._report("Full check", self.store.health.verify(model_id)))

    def repair(self, model_id: str) -> str:
        """Re-fetch (or rebuild) only the files that fail their check."""

        def run() -> str:
            report = self.store.health.repair(model_id, trigger=HealthTrigger.MODELS_TAB)
            if report.ok:
                fixed = ", ".join(report.files) or "nothing needed fixing"
                return f"**Repaired {model_id}** from {report.source}: {fixed}."
            return f"**Could not repair {model_id}.**\n\n" + "\n".join(f"- {step}" for step in report.steps)

        return self._explained(model_id, run)

    def download(self, model_id: str, *, every_s: float = 0.5) -> Iterator[str]:
        """Download (resuming what is already there); yields a progress line at most every ``every_s`` seconds
        while it runs, then the outcome."""
        refused = self._refusal(model_id, local=False)
        if refused is not None:
            yield refused
            return
        inbox: queue.Queue[object] = queue.Queue()

        def run() -> None:
            try:
                path = self.store.ensure(model_id, on_event=inbox.put)
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                inbox.put(f"**{model_id} is ready** ({format_bytes(size)}).")
            except Exception as exc:  # reported in catalogued words, never raw
                inbox.put(self._explain(exc, model_id))
            inbox.put(None)

        threading.Thread(target=run, name=f"download-{model_id}", daemon=True).start()
        shown = 0.0
        while (item := inbox.get()) is not None:
            if isinstance(item, str):
                yield item
            elif isinstance(item, DownloadEvent) and item.kind is DownloadEventKind.WAITING:
                yield f"{model_id}: another download of this model is running (a request needed it); waiting for it."
            elif (
                isinstance(item, DownloadEvent)
                and time.monotonic() - shown >= every_s
                and item.kind in (DownloadEventKind.PROGRESS, DownloadEventKind.BANDWIDTH_LIMITATION)
            ):
                shown = time.monotonic()
                yield _progress_line(item)

    def update(self, model_id: str) -> str:
        """Move to the newest revision; the previous one is kept, and a bad update is rolled back by itself."""

        def run() -> str:
            report = self.store.versions.update(model_id)
            return f"**{model_id}: {report.status.value.replace('_', ' ')}**" + (
                f" — {report.reason}" if report.reason else ""
            )

        return self._explained(model_id, run)

    def rollback(self, model_id: str) -> str:
        """Go back to the revision used before the last update."""

        def run() -> str:
            if not self.store.cache.previous(model_id, "main"):
                return (
                    f"**Nothing to roll back to.** No earlier revision of {model_id} is kept: an update keeps the "
                    "one it replaced."
                )
            return f"**{model_id} rolled back** to revision {self.store.versions.rollback(model_id)[:10]}."

        return self._explained(model_id, run)

    def cleanup_preview(self, gigabytes: float) -> tuple[pd.DataFrame, CleanupPlan]:
        """What would be deleted to free ``gigabytes`` (old revisions first, then least recently used models),
        leaving the default model and models in use alone."""
        plan = plan_cleanup(self.store.cache, int(max(0.0, gigabytes) * _GB), keep=self.kept())
        table = pd.DataFrame(
            [
                {
                    "model": item.repo_id,
                    "revision": item.commit[:10],
                    "refs": ", ".join(item.refs),
                    "frees": format_bytes(item.bytes_freed),
                    "why": item.reason,
                }
                for item in plan.items
            ],
            columns=CLEANUP_COLUMNS,
        )
        return table, plan

    def cleanup_note(self, plan: CleanupPlan) -> str:
        """What a preview found, and what it never offers."""
        kept = ", ".join(sorted(self.kept())) or "none"
        if not plan.items:
            return f"**Nothing can be deleted.** Never offered: the default model and models in use ({kept})."
        short = "" if plan.sufficient else f" — less than the {format_bytes(plan.bytes_to_free)} asked for"
        return (
            f"Deleting these frees **{format_bytes(plan.bytes_freed)}**{short}. Never offered: the default model "
            f"and models in use ({kept})."
        )

    def apply_cleanup(self, plan: CleanupPlan | None) -> str:
        """Delete exactly what a preview listed (call it once the user confirmed ``cleanup_confirmation``); refused
        if a listed model became the default or is in use since the preview."""
        if plan is None or not plan.items:
            return "Nothing to delete: preview a clean-up first."
        busy = sorted({item.repo_id for item in plan.items} & self.kept())
        if busy:
            return f"**Nothing was deleted:** {', '.join(busy)} is in use now. Preview the clean-up again."
        elsewhere = [why for repo in sorted({i.repo_id for i in plan.items}) if (why := self.store.cache.busy(repo))]
        if elsewhere:  # another process on this cache writes or reads it (system.locks)
            return f"**Nothing was deleted:** {'; '.join(elsewhere)}. Preview the clean-up again when it has finished."
        return self._explained(
            None,
            lambda: (
                f"**Freed {format_bytes(self.store.availability.apply_cleanup(plan))}** ({len(plan.items)} item(s))."
            ),
        )

    # -- reporting --------------------------------------------------------------------------------------------
    def _report(self, title: str, report) -> str:
        if report.ok:
            return (
                f"**{title}: all {report.files_checked} files of {report.repo_id} are intact** "
                f"({format_bytes(report.bytes_checked)} in {report.seconds:.2f} s)."
            )
        bad = "\n".join(f"- `{item.path}`: {item.problem.value.replace('_', ' ')}" for item in report.bad)
        return f"**{title}: {len(report.bad)} damaged file(s) in {report.repo_id}** — use *Repair*.\n\n{bad}"

    def _refusal(self, model_id: str, *, local: bool = True) -> str | None:
        """Why an action cannot start, in words: an id that is not owner/name (explained as the invalid parameter it
        is), or — for the actions on files already here — a model that is not downloaded."""
        if not isinstance(model_id, str) or not MODEL_ID_PATTERN.fullmatch(model_id) or ".." in model_id:
            error = InvalidParameterError(
                f"`model_id` must look like owner/name (got {model_id!r:.80})",
                parameter="model_id",
                value=model_id,
                constraint="owner/name",
            )
            return self._explain(error, None)
        if local and self.store.cache.resolve(model_id, "main") is None and model_id not in self.store.local_sources:
            return f"**{model_id} is not downloaded.** Use *Download* to fetch it first."
        return None

    def _explained(self, model_id: str | None, action: Callable[[], str], *, local: bool = True) -> str:
        refused = self._refusal(model_id, local=local) if model_id is not None else None
        if refused is not None:
            return refused
        try:
            return action()
        except (KintsugiError, OSError, ValueError) as exc:
            return self._explain(exc, model_id)

    def _explain(self, exc: BaseException, model_id: str | None) -> str:
        ctx = Classifier(probe=None).categorize(exc, {"model_id": model_id, "operation": "model action"})
        error = api_error(ctx, data_dir=self.data_dir)["error"]
        steps = "\n".join(f"- {step}" for step in error["actionable_steps"])
        return f"**{error['user_message']}**\n\n{error['message']}\n\n{steps}"


def _progress_line(event: DownloadEvent) -> str:
    share = event.bytes_done / event.bytes_total if event.bytes_total else 0.0
    eta = f", about {event.eta_s:.0f} s left" if event.eta_s is not None else ""
    return f"{share:.0%} of {format_bytes(event.bytes_total)} at {format_bytes(event.speed_bps)}/s{eta}"
