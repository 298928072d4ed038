"""Settings of the processes the scheduler's tests start (Celery worker and beat, a gateway): the production
settings read from the environment, plus

- the health and sync stand-ins of ``sched_fakes`` for whatever is still a stub;
- Celery on the broker named by SCHED_TEST_BROKER_URL, its keys under the test's GATEWAY_REDIS_PREFIX (the
  production settings' ``global_keyprefix``), so a test never touches another's Redis keys; REDIS_URL stays
  unset, so the channel layer and cache stay in memory.
"""

import os

from gateway_project.settings import *  # noqa: F403
from gateway_project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.federation.sched_fakes.SchedFakesConfig"]

if os.environ.get("SCHED_TEST_BROKER_URL"):
    CELERY_BROKER_URL = os.environ["SCHED_TEST_BROKER_URL"]
    CELERY_TASK_ALWAYS_EAGER = False
    # No broadcast channels (remote control, mingle, gossip) that another test's worker could hear.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
