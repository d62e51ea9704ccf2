"""The `review` Serve application: the review queue (ui.review) on the panel framework, for
operators. Decisions go through serve_apps/review_decisions.py, as the API's /v1/reviews do (the
same audit, the same 409 with who decided, reruns spending from the caller's daily cap); promote is
`augment promote`'s code. The caller is the signed-in user as the store holds them now."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import gradio as gr
from pydantic import Field
from ray import serve
from ray.serve import Application, Deployment

from augment_core.audit import record
from augment_core.identity import Identity, Principal, Role
from augment_core.reviews import ReviewItem, count_states, facets, get_item, list_items, matching_ids
from augment_core.settings import Settings
from augment_core.store import MetadataStore, open_store
from pipelines.augmenters.llm import LlmParams
from pipelines.operations import review_actions
from pipelines.operations.promote import promote
from pipelines.workflows.folder import WorkflowFolder
from serve_apps import review_decisions
from serve_apps.api_v1.app import online_context
from serve_apps.gateway.gate import Gate
from serve_apps.gateway.panels import PanelApp, PanelArgs
from serve_apps.refusal import ActionRefused
from ui.review import HEAD, Bulk, QueueFilter, ReviewAccess, build_review_panel

BULK_LIMIT = 100_000  # items one bulk decision goes through
STEP_COLUMNS = ("_status", "_error", "_provenance")  # what each step adds beside its values


class ReviewPanelArgs(PanelArgs):
    workflows_dir: str | None = Field(default=None, description="Rerun with this folder's workflows instead of "
                                                                "AUGMENT_WORKFLOWS_DIR's.")


def review_access(settings: Settings, workflows: WorkflowFolder, gate: Gate, prefix: str = "") -> ReviewAccess:
    """The panel's reads and changes on the store of `settings`."""
    def store() -> MetadataStore:
        return open_store(settings)

    def caller(user: str) -> Principal:
        found = Identity(store()).get_user(user)
        if found.disabled or not found.role.allows(Role.operator):
            raise ActionRefused(403, f"deciding review items needs the operator role; {user} is {found.role.value}"
                                + (" and disabled" if found.disabled else ""))
        return Principal(user=found.name, role=found.role, via="session")

    def page(wanted: QueueFilter, limit: int, offset: int, after: int | None) -> tuple[list[ReviewItem], int]:
        return list_items(store(), state=wanted.state, dataset=wanted.dataset, run_id=wanted.run_id, step=wanted.step,
                          field=wanted.field, reason=wanted.reason, after_id=after, limit=limit, offset=offset)

    def counts(wanted: QueueFilter) -> dict[str, int]:
        return count_states(store(), dataset=wanted.dataset, run_id=wanted.run_id, step=wanted.step,
                            field=wanted.field, reason=wanted.reason)

    def input_fields(item: ReviewItem) -> dict[str, Any]:
        """The record as its version holds it, without bookkeeping or what the workflow added."""
        try:
            found = review_actions.input_record(settings, item)
        except review_actions.RerunFailed:
            return {}
        try:  # what each step adds beside its values (its status, error, provenance)
            added = {f"{step.step_name}{suffix}" for step in workflows.online(item.workflow).chain
                     for suffix in STEP_COLUMNS}
        except Exception:  # the workflow is gone or broken: the item's own step is still known
            added = {f"{item.step}{suffix}" for suffix in STEP_COLUMNS}
        return {k: v for k, v in found.items()
                if k not in added and k not in (item.field, "record_uuid") and not k.startswith("_")}

    def bulk(user: str, action: str, wanted: QueueFilter) -> Bulk:
        principal, decide = caller(user), review_decisions.accept if action == "accept" else review_decisions.reject
        done = refused = 0
        first: str | None = None
        for item_id in matching_ids(store(), dataset=wanted.dataset, run_id=wanted.run_id, step=wanted.step,
                                    field=wanted.field, reason=wanted.reason, limit=BULK_LIMIT):
            try:
                decide(settings, store(), principal, item_id)
                done += 1
            except ActionRefused as exc:  # decided by someone else meanwhile: theirs stands
                refused += 1
                first = first or exc.message
        return Bulk(done, refused, first)

    def promoted(user: str, dataset: str) -> str:
        principal = caller(user)
        try:
            result = promote(settings, dataset)
        except KeyError as exc:
            record(store(), principal.label, "dataset.promote", dataset, "refused", str(exc.args[0]))
            raise ActionRefused(404, str(exc.args[0])) from None
        record(store(), principal.label, "dataset.promote", f"{result.dataset} v{result.from_version}",
               detail=f"to v{result.version}: {result.applied} decision(s) applied")
        return (f"**{result.dataset}** v{result.from_version} promoted to **v{result.version}** ({result.rows:,} "
                f"records): {result.applied} decision(s) applied, {result.rejected} rejected value(s) dropped, "
                f"{result.pending} item(s) still pending.")

    return ReviewAccess(
        page=page, counts=counts, facets=lambda: facets(store()), item=lambda item_id: get_item(store(), item_id),
        record=input_fields, field_type=lambda item: str(review_actions.field_type(settings, item)),
        choices=lambda item: field_choices(workflows, item),
        accept=lambda user, item_id: review_decisions.accept(settings, store(), caller(user), item_id),
        reject=lambda user, item_id: review_decisions.reject(settings, store(), caller(user), item_id),
        edit=lambda user, item_id, text: review_decisions.edit_text(settings, store(), caller(user), item_id, text),
        rerun=lambda user, item_id: review_decisions.rerun(settings, store(), gate, caller(user), workflows, item_id),
        bulk=bulk, promote=promoted, dataset_url=lambda dataset: f"{prefix}/ui/data/?{urlencode({'dataset': dataset})}",
    )


def field_choices(workflows: WorkflowFolder, item: ReviewItem) -> list[str]:
    """The values the item's field may take, if its llm step declares an enum for it."""
    try:
        chain = workflows.online(item.workflow).chain
    except Exception:  # the workflow is gone or broken: the field is typed by its column only
        return []
    for step in chain:
        if step.step_name == item.step and isinstance(step.params, LlmParams):
            for name, output in step.params.outputs.items():
                if step.params.prefix + name == item.field and output.enum:
                    return list(output.enum)
    return []


@serve.deployment(num_replicas=2, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0.05})
@serve.ingress()
class ReviewPanel(PanelApp):
    title = "Review"
    role = Role.operator
    head = HEAD

    def __init__(self, args: ReviewPanelArgs) -> None:
        super().__init__(args)
        # Reruns share the cluster's provider limiters and cache, and spend from the caller's cap, as the API's do.
        self.workflows = WorkflowFolder(Path(args.workflows_dir or self.settings.workflows_dir),
                                        context_for=online_context(self.settings))

    def health(self) -> str:
        count_states(open_store(self.settings))  # the store answers
        return "ok"

    def blocks(self) -> gr.Blocks:
        return build_review_panel(review_access(self.settings, self.workflows, Gate(self.settings), self.args.prefix))


def build_app(args: dict[str, Any]) -> Application:
    # The decorators made the class a Deployment (mypy does not apply class decorators).
    return cast(Deployment, ReviewPanel).bind(ReviewPanelArgs.model_validate(args))
