"""The policy stage's training data: the DataModule and the mixed real/model batches."""
