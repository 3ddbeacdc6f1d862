"""The Models tab's data and actions, against the loopback hub and real files."""

from __future__ import annotations

from components.chaos.loopback_hub import HubServer
from components.store.catalog import CATALOG
from components.store.model_store import ModelStore
from components.views.models import ModelActions, model_choices, models_table
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
    assert [value for _label, value in choices] == [entry.model_id for entry in CATALOG]
    assert choices[1][0].startswith(f"{CATALOG[1].model_id} — missing (")
