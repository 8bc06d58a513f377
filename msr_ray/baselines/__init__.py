"""Sequential baselines (Popularity, SASRec, GRU4Rec) scored under the MLLM's exact protocol."""
