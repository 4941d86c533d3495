"""Builders of the preference and RL stages that `divalign.train` launches (the SFT builders live in `divalign.train`).

Each module gives a stage's ``build(run)`` (the trainer, ready to train) and ``columns(training_args)`` (the dataset
column alternatives checked before any model loads); `divalign.train.STAGES` pairs them with the config class.
"""
