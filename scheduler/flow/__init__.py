"""Workflow code: everything that runs inside Temporal's workflow sandbox, and nothing else.

The rule for every module here: deterministic, and no IO. Time comes from `workflow.now()`, waiting
from `workflow.sleep()`/`workflow.wait_condition()`, randomness from `workflow.uuid4()`; side effects
(messages, webhooks, starting flows for an audience) are activities, called by name and implemented
outside this package. A module here imports only the standard library's pure parts, pydantic,
temporalio's workflow-side API, phonenumbers, this package and `scheduler.errors`/`scheduler.problems`
(which import nothing but the standard library); never a web, database, mail or template library.
`tests/test_layout.py` checks it.

Names here are the contract with running flows and schedules (workflow types, signal, query,
activity and search-attribute names, patch ids): renaming one strands them or breaks their replay.
"""
