"""A round's science: the self-assessment question and answer, assessment by likelihood,
constrained answer decoding, reformatting assessments into data, and the round's pure decisions."""
