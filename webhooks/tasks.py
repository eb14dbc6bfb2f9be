"""The delivery task, run by a worker (``manage.py db_worker``; ``make worker``)."""

from django_tasks import task


@task()
def deliver(delivery_ids: list[int]) -> dict[str, int]:
    """Send each due delivery once; a failed one is scheduled again (a new task)."""
    from .delivery import attempt_delivery  # the sending machinery, loaded in the worker only

    outcome: dict[str, int] = {}
    for delivery_id in delivery_ids:
        result = attempt_delivery(delivery_id)
        outcome[result] = outcome.get(result, 0) + 1
    return outcome
