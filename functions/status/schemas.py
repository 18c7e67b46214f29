"""The status function's JSON bodies as pydantic models: what `functions/status/openapi.yaml`
is generated from (`python -m scripts.gen_openapi`, run by `make docs`).

The bodies that depend on the pipeline's stages (the counts, the overview's stages and user
rows, the thresholds, the dead-letter sink's failures) are built from a `Pipeline`, so a stage
added to pipeline.toml is in the models, and in the document, with no edit here:
`schema_models(pipeline)` builds them for any pipeline, and the module's names (`StatusBody`,
`Overview`, ...) are those of `PIPELINE`. Each model's docstring and each field's
`description` are the document's prose.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from typing_extensions import TypeAliasType

from functions.common.pipeline import IDLE_PHASE, PIPELINE, THRESHOLD_KEYS, Pipeline
from functions.status.app import MAX_DECLARED_UPLOAD
from functions.status.thresholds import MAX_THRESHOLD

# Named scalars: each is one entry of the document's components.
Count = TypeAliasType("Count", Annotated[int, Field(ge=0)])
Seconds = TypeAliasType("Seconds", Annotated[float, Field(ge=0)] | None)
Latency = TypeAliasType("Latency", Annotated[float, Field(ge=0)] | None)
Limit = TypeAliasType("Limit", Annotated[float, Field(gt=0, le=MAX_THRESHOLD)])
Fraction = Annotated[float, Field(ge=0, le=1)]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def optional(description: str) -> Any:
    """A field that a body may leave out (None on the model then) but never sends as null:
    annotated with its type alone, so null is refused, and without the default in the
    document, so the document does not offer null either."""
    return Field(default=None, description=description, json_schema_extra=_no_default)


class Body(BaseModel):
    """A body the function answers with: exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class Request(BaseModel):
    """A body the function reads: fields it does not read are ignored."""

    model_config = ConfigDict(extra="ignore")


# Errors


class Error(Body):
    """An error the client can act on; `error` says what is wrong."""

    error: str = Field(description="What is wrong, for a person to read.")


class GenericError(Body):
    """A server-side error (500, 503): a generic message, its details logged under
    `trace_id`, never sent."""

    error: str = Field(description="A generic message, e.g. `temporarily unavailable`.")
    trace_id: str = Field(
        pattern="^[0-9a-f]{32}$",
        description="The request's trace id (32 hex digits), in the log line with the details.",
    )


# The user API


class UploadDeclaration(Request):
    """An upload the front end is about to make."""

    expected: int = Field(
        ge=1, le=MAX_DECLARED_UPLOAD, description="Photos the front end is about to upload."
    )


# The admin API


class LoginRequest(Request):
    """The admin password."""

    password: str = Field(description="The admin password (`ADMIN_PASSWORD`).")


class LoginResponse(Body):
    """A successful login; the session is in the `admin_session` cookie."""

    role: Literal["admin"] = Field(description="Always `admin`.")
    expires_in_s: int = Field(description="Seconds until the session expires.")


class LogoutResponse(Body):
    """The session is over and its cookie cleared."""

    logged_out: Literal[True] = Field(description="Always true.")


class LatencyPercentiles(Body):
    """Over the sliding window (5 minutes by default); null without samples."""

    p50: Latency = Field(description="Median latency, milliseconds.")
    p95: Latency = Field(description="95th percentile latency, milliseconds.")
    p99: Latency = Field(description="99th percentile latency, milliseconds.")


class Backlog(Body):
    """Photos waiting for the stage."""

    pending: Count = Field(description="Photos waiting for the stage.")
    oldest_age_s: Seconds = Field(
        description="How long the oldest of them has waited; null when none waits."
    )


class StageHealth(Body):
    """One stage's throughput, latency, backlog and errors, and its health against the
    thresholds in force."""

    throughput_per_min: Count = Field(
        description="Photos the stage completed (done or failed) in the last minute."
    )
    latency_ms: LatencyPercentiles = Field(
        description="Over the sliding window (5 minutes by default); null without samples."
    )
    backlog: Backlog = Field(description="Photos waiting for the stage, and the oldest's wait.")
    errors_by_reason: dict[str, Count] = Field(
        description="Failures in the sliding window, by reason."
    )
    error_rate: Fraction = Field(description="Failures over completions in the sliding window.")
    health: Literal["ok", "breach"] = Field(description="`breach` while a threshold is exceeded.")
    breaches: list[str] = Field(description="Each threshold exceeded, and by how much.")


class StageThresholds(Body):
    """One stage's acceptable delays."""

    p95_ms: Limit = Field(description="Acceptable p95 latency, milliseconds.")
    backlog_age_s: Limit = Field(
        description="Acceptable wait of the oldest pending photo, seconds."
    )


class StageThresholdsChange(Body):
    """New acceptable delays for one stage; a threshold left out keeps its value."""

    p95_ms: Limit = optional("Acceptable p95 latency, milliseconds.")
    backlog_age_s: Limit = optional("Acceptable wait of the oldest pending photo, seconds.")


# The service


class Health(Body):
    """The function is up."""

    ok: Literal[True] = Field(description="Always true.")


class DeadLetterEvent(Request):
    """The data of the event the broker gave up delivering (the photo it was about)."""

    bucket: str = Field(min_length=1, description="The photo's bucket.")
    key: str = Field(min_length=1, description="The photo's object key.")
    version_id: str | None = Field(default=None, description="The photo's object version.")
    user_id: str = Field(min_length=1, description="The photo's owner.")


@dataclass(frozen=True)
class SchemaModels:
    """The models that depend on the pipeline's stages, built for one pipeline."""

    counts: type[BaseModel]
    run: type[BaseModel]
    timestamps: type[BaseModel]
    failure: type[BaseModel]
    status: type[BaseModel]
    user_row: type[BaseModel]
    stages: type[BaseModel]
    thresholds: type[BaseModel]
    thresholds_change: type[BaseModel]
    overview: type[BaseModel]
    dead_letter_recorded: type[BaseModel]
    pipeline_stage: type[BaseModel]


def _literal(values: tuple[str, ...]) -> Any:
    return Literal[values]  # Literal[("a", "b")] is Literal["a", "b"]


def _model(name: str, doc: str, base: type[BaseModel], fields: dict[str, Any]) -> type[BaseModel]:
    return create_model(name, __base__=base, __doc__=doc, __module__=__name__, **fields)


@cache
def schema_models(pipeline: Pipeline = PIPELINE) -> SchemaModels:
    """The pipeline-dependent models for `pipeline`, in its stage order."""
    messages = pipeline.messages()
    waiting = ", ".join(
        f"`{stage.phase}` while {stage.counted_as} are pending" for stage in pipeline
    )
    phase = TypeAliasType(
        "Phase",
        Annotated[
            _literal(tuple(messages)), Field(description=f"{waiting}, `{IDLE_PHASE}` otherwise.")
        ],
    )
    shown = "; ".join(f"{message!r} while `{name}`" for name, message in messages.items())
    failed_states = _literal(tuple(stage.failed for stage in pipeline))
    message = _literal(tuple(messages.values()))

    count_fields: dict[str, Any] = {"uploaded": (Count, Field(description="Photos that arrived."))}
    for stage in pipeline:
        count_fields[stage.done_counter] = (
            Count,
            Field(description=f"Photos the `{stage.name}` stage did."),
        )
        count_fields[stage.failed_counter] = (
            Count,
            Field(description=f"Photos the `{stage.name}` stage failed for good."),
        )
        count_fields[stage.pending_counter] = (
            Count,
            Field(description=f"Photos still waiting for the `{stage.name}` stage."),
        )
    count_fields["faces"] = (Count, Field(description="Faces found in the photos."))
    counts = _model(
        "Counts",
        "Photos arrived, done, failed and pending at each stage, and faces found.",
        Body,
        count_fields,
    )
    run = _model(
        "Run",
        "The current (or latest) run: it starts when a photo arrives, or an upload is declared,"
        " while nothing is pending, and is finished when every photo of it has ended.",
        Body,
        {
            "started_at": (
                float | None,
                Field(description="When the run started, Unix seconds; null before any run."),
            ),
            "expected": (
                Count,
                Field(
                    description="Photos the run waits for (the declared count, or more if more"
                    " arrived)."
                ),
            ),
            **count_fields,
            "progress": (Fraction, Field(description="Fraction of the run's stage work done.")),
            "eta_s": (
                Seconds,
                Field(
                    description="Seconds left at the user's recent rate; null until something"
                    " completed."
                ),
            ),
        },
    )
    timestamps = _model(
        "Timestamps",
        "Unix seconds; absent until the event happened.",
        Body,
        {
            "first_upload_at": (float, optional("When the first photo arrived.")),
            "last_upload_at": (float, optional("When the latest photo arrived.")),
            **{
                stage.finished_at: (
                    float,
                    optional(f"When the `{stage.name}` stage last finished a photo."),
                )
                for stage in pipeline
            },
        },
    )
    failure = _model(
        "Failure",
        "One photo that failed for good.",
        Body,
        {
            "photo_id": (
                str,
                Field(description="The photo: its object key, `@` and version when it has one."),
            ),
            "stage": (failed_states, Field(description="The state the photo failed into.")),
            "reason": (
                str,
                Field(description="corrupt, unsupported, too_large, missing, delivery_failed, ..."),
            ),
            "detail": (str, Field(description="What happened, at most 300 characters.")),
            "at": (float, Field(description="When, Unix seconds.")),
        },
    )
    status = _model(
        "Status",
        "What the front end shows while the user's photos are processed.",
        Body,
        {
            "user_id": (str, Field(description="The user.")),
            "phase": (phase, Field(description="The stage the run waits for.")),
            "message": (message, Field(description=f"What the front end shows: {shown}.")),
            "run": (run, Field(description="The current (or latest) run.")),
            "counts": (counts, Field(description="Lifetime counters.")),
            "timestamps": (timestamps, Field(description="Unix seconds; absent until then.")),
            "failures": (list[failure], Field(description="Newest first, at most 10.")),
        },
    )
    user_row = _model(
        "UserRow",
        "One user's current (or latest) run, as the overview lists it.",
        Body,
        {
            "user_id": (str, Field(description="The user.")),
            "phase": (phase, Field(description="The stage the run waits for.")),
            "progress": (Fraction, Field(description="Fraction of the run's stage work done.")),
            "uploaded": (Count, Field(description="Photos of the run that arrived.")),
            **{
                stage.done_counter: (
                    Count,
                    Field(description=f"Photos of the run the `{stage.name}` stage did."),
                )
                for stage in pipeline
            },
            "failed": (Count, Field(description="Photos of the run failed at any stage.")),
            "eta_s": (Seconds, Field(description="Seconds left; null until something completed.")),
        },
    )
    stages = _model(
        "Stages",
        "Each stage's health, keyed by stage name.",
        Body,
        {
            stage.name: (StageHealth, Field(description=f"The {stage.label} stage."))
            for stage in pipeline
        },
    )
    thresholds = _model(
        "Thresholds",
        "The acceptable delays in force, keyed by stage name.",
        Body,
        {
            stage.name: (
                StageThresholds,
                Field(description=f"The {stage.label} stage's acceptable delays."),
            )
            for stage in pipeline
        },
    )
    thresholds_change = _model(
        "ThresholdsChange",
        "A change of thresholds: any subset of the stages, and of each stage's thresholds.",
        Body,
        {
            stage.name: (
                StageThresholdsChange,
                optional(f"New acceptable delays for the {stage.label} stage."),
            )
            for stage in pipeline
        },
    )
    pipeline_stage = _model(
        "PipelineStage",
        "One stage as the dashboard draws it.",
        Body,
        {
            "name": (str, Field(description="The stage: its key in `stages` and `thresholds`.")),
            "label": (str, Field(description="The dashboard's name for the stage.")),
            "counted_as": (str, Field(description="Its user rows' count: `<counted_as>_done`.")),
            "phase": (phase, Field(description="The phase of a user waiting for the stage.")),
            "message": (message, Field(description="What the front end shows in that phase.")),
        },
    )
    overview = _model(
        "Overview",
        "The pipeline now: each stage's health, the active users, the thresholds in force.",
        Body,
        {
            "generated_at": (float, Field(description="When the overview was read, Unix seconds.")),
            "pipeline": (
                list[pipeline_stage],
                Field(description="The stages in the order a photo goes through them."),
            ),
            "stages": (stages, Field(description="Each stage's health, keyed by stage name.")),
            "users": (
                list[user_row],
                Field(description="Users with work pending first, then the most recently active."),
            ),
            "thresholds": (thresholds, Field(description="The thresholds in force.")),
        },
    )
    dead_letter_recorded = _model(
        "DeadLetterRecorded",
        "The failure the dead letter marked.",
        Body,
        {
            "recorded": (
                failed_states,
                Field(description="The state the photo failed into (or had failed into already)."),
            )
        },
    )
    return SchemaModels(
        counts=counts,
        run=run,
        timestamps=timestamps,
        failure=failure,
        status=status,
        user_row=user_row,
        stages=stages,
        thresholds=thresholds,
        thresholds_change=thresholds_change,
        overview=overview,
        dead_letter_recorded=dead_letter_recorded,
        pipeline_stage=pipeline_stage,
    )


if tuple(StageThresholds.model_fields) != THRESHOLD_KEYS:  # pragma: no cover - a wrong edit
    raise RuntimeError(f"StageThresholds must have the fields {THRESHOLD_KEYS}")

MODELS = schema_models()
Counts = MODELS.counts
Run = MODELS.run
StatusBody = MODELS.status
UserRow = MODELS.user_row
Stages = MODELS.stages
Overview = MODELS.overview
Thresholds = MODELS.thresholds
ThresholdsChange = MODELS.thresholds_change
DeadLetterRecorded = MODELS.dead_letter_recorded
