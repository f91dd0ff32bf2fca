"""Step definitions: few, typed, generic; the feature files carry the meaning (loaded by steps.plugin)."""
