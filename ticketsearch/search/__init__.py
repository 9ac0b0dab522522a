"""The search layer: the only code that imports Ray (spec -> Tune, trainable, results callback, driver)."""
