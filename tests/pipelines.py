"""A toy stage after today's last one, for the tests that show a row added to pipeline.toml
reaches everything that depends on the stages."""

from functions.common.pipeline import PIPELINE, TABLE, Pipeline

# The row as a developer appends it to functions/common/pipeline.toml.
CAPTION_ROW = f"""
[[stage]]
name = "caption"
trigger = "{PIPELINE.stages[-1].created}"
done = "captioned"
failed = "caption_failed"
created = "caption.created"
failed_event = "caption.failed"
counted_as = "captions"
phase = "captioning"
message = "Writing captions"
label = "Caption"
thresholds = {{ p95_ms = 100.0, backlog_age_s = 30.0 }}
"""


def with_a_caption_stage(row: str = CAPTION_ROW) -> Pipeline:
    """Today's table and `row` after its last stage."""
    return Pipeline.from_toml(TABLE.read_text() + row)
