"""Every rule, persistence and direction threshold, in one place (docs/rules.md). Provisional."""

from __future__ import annotations

# The activity gate (docs/design.md): a window with running requests is active when either is above
ACTIVE_KV_PCT = 30.0
ACTIVE_GPU_UTIL_PCT = 20.0

# R1 under-batching
R1_OCCUPANCY_BELOW = 0.25  # running / max_num_seqs
R1_WAITING_BELOW = 2.0
R1_PREFILL_SHARE_BELOW = 0.40  # Δprefill_sum / window seconds
R1_PREFILL_SECONDS_BELOW = 4.0  # Δprefill_sum

# R2 KV cache pressure
R2_KV_PEAK_AT_LEAST = 0.88
R2_KV_CRITICAL_AT_LEAST = 0.95
R2_VRAM_CORROBORATES_AT = 0.78
R2_BACKLOG_QUEUE_RATIO_AT_LEAST = 0.30
R2_MAX_SOURCE_SKEW_SECONDS = 1.0

# R3 low prefix reuse
R3_HIT_RATE_BELOW = 0.35
R3_PROMPT_TOKENS_AT_LEAST = 20.0
R3_REQUEST_RATE_AT_LEAST = 5.0
R3_RUNNING_ABOVE = 0.75

# R5 concurrency saturation
R5_CAP_DISTANCE_AT_MOST = 0.5
R5_WAITING_AT_LEAST = 2.0
R5_QUEUE_RATIO_AT_LEAST = 0.30
R5_KV_PEAK_SAFE_BELOW = 0.80  # below: raising --max-num-seqs is safe

# Persistence over the horizon
PERSIST_MIN_WINDOWS = 3
PERSIST_MIN_SHARE = 0.25
R2_PREEMPTION_WINDOWS = 1  # any window with preemptions
R2_CRITICAL_WINDOWS = 2  # windows with KV ≥ 95%

# Direction after a configuration change
BETTER_EFFICIENCY_PP = 2.0
WORSE_EFFICIENCY_PP = -5.0
BETTER_THROUGHPUT_PCT = 10.0
WORSE_THROUGHPUT_PCT = -10.0
LATENCY_VETO_TTFT_P99_PCT = 20.0

# Adaptive vLLM cadence (docs/sources.md): any of these on a poll makes the cadence fast at once
CADENCE_KV_AT_LEAST = 0.70
CADENCE_RUNNING_SHARE = 0.90  # running / max_num_seqs
CADENCE_RUNNING_CHANGE = 3.0  # |Δrunning| between two polls, more than this
CADENCE_KV_CHANGE = 0.05  # |Δkv_usage| between two polls
CADENCE_HOLD_SECONDS = 10.0  # fast until this long after the last poll with pressure
CADENCE_IDLE_AFTER_SECONDS = 30.0  # idle interval after this long without any activity
CADENCE_WAKE_GPU_UTIL_PCT = 20.0  # a GPU this busy wakes an idle cadence (the activity gate's)

# Windows (docs/sources.md)
WINDOW_SECONDS = 2.0
GAP_WINDOWS = 2.0  # a gap between polls longer than this many windows ends the window
