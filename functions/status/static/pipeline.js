// The pipeline's stages as the admin overview serves them (its `pipeline` list, in order):
// nothing on the dashboard names a stage itself.

/** [{name, label, counted_as}] in pipeline order; [] before the first overview. */
export function stagesOf(overview) {
  if (Array.isArray(overview?.pipeline)) return overview.pipeline;
  // An overview without the list still has one health entry per stage.
  const names = Object.keys(overview?.stages ?? {});
  return names.map((name) => ({ name, label: name, counted_as: name }));
}

/** A string that changes exactly when the stages (their order, names or labels) do. */
export function stagesKey(stages) {
  return JSON.stringify(stages.map((stage) => [stage.name, stage.label, stage.counted_as]));
}
