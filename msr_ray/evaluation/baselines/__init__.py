"""Sequential baselines (Popularity, SASRec, GRU4Rec) scored under the MLLM's exact protocol."""

# Each baseline's command-line name and the name its outputs carry (imports nothing, so
# the CLI lists them without importing torch).
BASELINES = {"pop": "popularity", "sasrec": "sasrec", "gru4rec": "gru4rec"}
