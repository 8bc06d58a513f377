"""The method of MLLM-MSR: item summaries, the recurrent preference step, the recommender
(prompts, loading, prefix-shared scoring) and its export as one Hugging Face folder."""
