"""The optional human approval before a promotion: the flow run pauses on a real Prefect API
(the test harness's) until someone resumes it with an answer, which it then reads back."""

import contextvars
import threading
import time

import pytest

pytestmark = pytest.mark.slow


def test_paused_run_waits_for_a_reviewer_and_reads_the_answer(prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    from flows.flywheel import ask_approval

    @flow
    def review() -> dict:
        return ask_approval("fw", 3, "pass@1 0.30 vs 0.25", timeout=300)

    result: dict = {}
    paused = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    # The flow's thread runs in this test's context: Prefect's settings (the API it talks to)
    # live in a context variable, which a new thread does not inherit.
    context = contextvars.copy_context()
    t = threading.Thread(target=lambda: context.run(lambda: result.update(answer=review())))
    t.start()
    runs = []
    deadline = time.time() + 120
    with get_client(sync_client=True) as client:
        while not runs and time.time() < deadline:
            time.sleep(1)
            runs = client.read_flow_runs(flow_run_filter=paused)
    assert len(runs) == 1, "the flow never paused for approval"
    assert "answer" not in result  # still waiting
    resume_flow_run(runs[0].id, run_input={"approve": False, "note": "length doubled"})
    t.join(120)
    assert result["answer"] == {"approved": False, "note": "length doubled"}
