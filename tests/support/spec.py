"""What the spec fixes and several tests check: the fields of its API error shape, written out once."""

SPEC_ERROR_KEYS = frozenset(
    {
        "type",
        "severity",
        "message",
        "user_message",
        "recovery_attempted",
        "recovery_success",
        "actionable_steps",
        "estimated_resolution_time",
    }
)
