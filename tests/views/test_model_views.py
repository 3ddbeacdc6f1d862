"""The Models tab's data and actions, against the loopback hub and real files."""

from __future__ import annotations

import pytest

from components.chaos.loopback_hub import HubServer
from components.generation.families import FAMILIES, Family
from components.store.catalog import CATALOG
from components.store.model_store import ModelStore
from components.views.models import (
    HEALTH_COLUMNS,
    ModelActions,
    health_log,
    model_choices,
    models_table,
    picker_model_ids,
)
from tests.store.conftest import REPO, WEIGHTS


def _damage(store: ModelStore) -> None:
    snapshot = store.ensure(REPO)
    blob = (snapshot / WEIGHTS).resolve()
    blob.write_bytes(blob.read_bytes()[:1000])


def test_table_lists_every_known_model_with_its_status(store: ModelStore) -> None:
    """Every catalogue entry has a row; nothing downloaded yet reads as missing, with the expected download size."""
    table = models_table(store)
    assert list(table["model"]) == [entry.model_id for entry in CATALOG]
    assert set(table["status"]) == {"missing"}
    assert table.loc[1, "download"].endswith("GiB")


def test_download_streams_progress_then_ready(store: ModelStore, hub: HubServer) -> None:
    """Downloading from the hub yields progress lines and ends with the model ready."""
    lines = list(ModelActions(store).download(REPO, every_s=0.0))
    assert any("%" in line for line in lines[:-1])
    assert lines[-1].startswith(f"**{REPO} is ready**")


def test_quick_check_reports_a_truncated_file_and_repair_fixes_it(store: ModelStore) -> None:
    """A truncated weight file shows in the quick check; Repair re-fetches it and the check is clean again."""
    actions = ModelActions(store)
    _damage(store)
    assert "damaged file" in actions.quick_check(REPO) and WEIGHTS in actions.quick_check(REPO)
    assert actions.repair(REPO).startswith(f"**Repaired {REPO}**")
    assert "intact" in actions.quick_check(REPO)


def test_a_repair_from_the_models_tab_is_in_the_health_log(store: ModelStore) -> None:
    """The log lists the repair newest first: found by the Models tab, the file and how it was damaged, what was
    done."""
    assert list(health_log(store).columns) == HEALTH_COLUMNS and health_log(store).empty
    _damage(store)
    ModelActions(store).repair(REPO)
    (row,) = health_log(store).to_dict("records")
    assert (row["model"], row["found by"]) == (REPO, "Models tab")
    assert row["found"].startswith(f"{WEIGHTS}: ") and row["done"].startswith(f"repaired ({WEIGHTS})")


def test_full_check_of_an_intact_model_is_clean(store: ModelStore) -> None:
    """After a download every file hashes to its name."""
    store.ensure(REPO)
    assert "intact" in ModelActions(store).full_check(REPO)


def test_failure_is_explained_in_catalogued_words(store: ModelStore) -> None:
    """An unknown repo answers with the plain-language message and steps, not an exception's text."""
    text = "\n".join(ModelActions(store).download("nobody/unknown-model"))
    assert "Traceback" not in text and "/tmp" not in text
    assert text.startswith("**") and "\n- " in text


def test_cleanup_needs_a_preview_first(store: ModelStore) -> None:
    """Apply without a previewed plan deletes nothing and says so."""
    assert "preview" in ModelActions(store).apply_cleanup(None)


def test_cleanup_preview_lists_old_revision_then_apply_frees_it(store: ModelStore, hub: HubServer, model_v2) -> None:
    """After an update, the preview proposes the old revision, and applying it frees that space."""
    store.ensure(REPO)
    hub.add_revision(REPO, model_v2)
    store.versions.update(REPO)
    table, plan = ModelActions(store).cleanup_preview(0.000001)
    assert len(table) >= 1 and plan.items
    assert ModelActions(store).apply_cleanup(plan).startswith("**Freed")


def test_picker_labels_carry_status_and_values_stay_ids(store: ModelStore) -> None:
    """Model picker entries read "id — status" (with the download size when missing); the value is the bare id."""
    choices = model_choices(store)
    assert [value for _label, value in choices] == picker_model_ids()
    assert choices[1][0].startswith(f"{CATALOG[1].model_id} — missing (")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_picker_offers_every_familys_tiny_model(store: ModelStore, family: Family) -> None:
    """Each family's built-in tiny model can be picked, listed in the catalogue or not, the catalogue first."""
    values = [value for _label, value in model_choices(store)]
    assert family.tiny_model_id in values
    assert values[: len(CATALOG)] == [entry.model_id for entry in CATALOG]


def test_cleanup_never_offers_the_default_model(store: ModelStore) -> None:
    """Asked to free everything, the preview leaves the configured default model out, and says why."""
    store.ensure(REPO)
    everything = ModelActions(store).cleanup_preview(10**6)[1]
    assert REPO in {item.repo_id for item in everything.items}
    actions = ModelActions(store, default_model=REPO)
    table, plan = actions.cleanup_preview(10**6)
    assert plan.items == () and table.empty
    assert "Nothing can be deleted" in actions.cleanup_note(plan) and REPO in actions.cleanup_note(plan)


def test_cleanup_never_offers_a_model_in_use(store: ModelStore) -> None:
    """A model that a running request uses is left out of the preview."""
    store.ensure(REPO)
    assert ModelActions(store, in_use=lambda: {REPO}).cleanup_preview(10**6)[1].items == ()


def test_cleanup_refuses_a_model_that_came_into_use_after_the_preview(store: ModelStore) -> None:
    """A preview made while the model was idle is not applied once a request uses it: nothing is deleted."""
    store.ensure(REPO)
    using: set[str] = set()
    actions = ModelActions(store, in_use=lambda: using)
    _table, plan = actions.cleanup_preview(10**6)
    using.add(REPO)
    assert actions.apply_cleanup(plan).startswith("**Nothing was deleted:**")
    assert store.cache.resolve(REPO, "main") is not None


def test_cleanup_confirmation_names_what_goes_and_the_bytes_freed(store: ModelStore) -> None:
    """The question before deleting names the model and the size it frees; without a plan it asks for a preview."""
    from components.views.models import cleanup_confirmation
    from recovery.messages import format_bytes

    store.ensure(REPO)
    _table, plan = ModelActions(store).cleanup_preview(10**6)
    question = cleanup_confirmation(plan)
    assert REPO in question and format_bytes(plan.bytes_freed) in question and "cannot be undone" in question
    assert "preview" in cleanup_confirmation(None)


def test_models_in_use_are_the_unfinished_requests_models(tmp_path) -> None:
    """Accepted and running requests count as using their model; finished ones do not."""
    from components.journal import RequestJournal
    from components.views.models import models_in_use

    journal = RequestJournal(tmp_path / "journal.sqlite")
    journal.accept("a", {"model_id": "owner/running"})
    journal.mark_running("a")
    journal.accept("b", {"model_id": "owner/finished"})
    journal.complete("b", {"video": "b.mp4"})
    assert models_in_use(journal) == {"owner/running"}
