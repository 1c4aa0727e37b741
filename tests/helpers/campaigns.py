"""Campaign definitions the tests share: the seed workflow."""

from __future__ import annotations

SEED = {
    "start_step": "step_1",
    "steps": {
        "step_1": {"node": "send_message", "go_to": "step_2"},
        "step_2": {"node": "wait_answer", "condition": {"satisfied": "step_3", "timeout": "step_4"}},
        "step_3": {"node": "notify_creator"},
        "step_4": {"node": "webhook", "go_to": "step_5"},
        "step_5": {"node": "explicity_wait", "go_to": "step_6"},
        "step_6": {"node": "send_message"},
    },
}
