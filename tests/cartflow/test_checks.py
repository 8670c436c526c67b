"""The beat schedule system check (cartflow/checks.py): in-process against the test database, and as a
real ``manage.py check`` against a database whose PeriodicTask names a task nobody registers and against
an unreachable one; silent while migrations are pending. ``beat_schedule_as_migrated`` (tests/support/beat.py)
gives each test the PeriodicTask rows as the migrations created them, whatever an earlier test flushed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from cartflow.checks import EXPECTED_SCHEDULES, TAG, check_beat_schedules
from tests.support.services import free_port
from tests.support.worker import ROOT, database_url_for

RELEASE = "inventory: release expired reservations"


def _ids() -> list[str]:
    return [problem.id for problem in check_beat_schedules()]


def _manage_check(database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": settings.REDIS_URL, "CARTFLOW_DEV": "1"}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.django_db
@pytest.mark.usefixtures("beat_schedule_as_migrated")
def test_the_migrated_schedule_passes():
    assert dict(PeriodicTask.objects.filter(enabled=True).values_list("name", "task")) == EXPECTED_SCHEDULES
    assert run_checks(tags=[TAG]) == []
    call_command("check")  # the whole project's checks: no error either


@pytest.mark.django_db
@pytest.mark.usefixtures("beat_schedule_as_migrated")
def test_a_schedule_naming_an_unregistered_task_is_an_error():
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="stray", task="inventory.tasks.no_such_task", interval=every)
    [problem] = check_beat_schedules()
    assert (problem.id, problem.obj) == ("cartflow.E001", "stray")
    assert "'inventory.tasks.no_such_task'" in problem.msg
    with pytest.raises(SystemCheckError, match="cartflow.E001"):
        call_command("check")
    PeriodicTask.objects.filter(name="stray").update(enabled=False)  # a disabled row sends nothing
    assert _ids() == []


@pytest.mark.django_db
@pytest.mark.usefixtures("beat_schedule_as_migrated")
def test_an_expected_schedule_renamed_away_deleted_or_disabled():
    PeriodicTask.objects.filter(name=RELEASE).update(task="inventory.tasks.release_expired_holds")
    assert sorted(_ids()) == ["cartflow.E001", "cartflow.E002"]  # unregistered, and not the expected task
    PeriodicTask.objects.filter(name=RELEASE).delete()
    [missing] = check_beat_schedules()
    assert (missing.id, missing.obj) == ("cartflow.E002", RELEASE) and "no such PeriodicTask" in missing.msg
    PeriodicTask.objects.filter(name="orders: outbox sweep").update(enabled=False)
    assert sorted(_ids()) == ["cartflow.E002", "cartflow.W002"]  # paused in the admin: a warning only


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("beat_schedule_as_migrated")
def test_manage_py_check_fails_on_a_renamed_task():
    PeriodicTask.objects.filter(name=RELEASE).update(task="inventory.tasks.release_expired_holds")
    result = _manage_check(database_url_for(settings.DATABASES["default"]))
    assert result.returncode == 1
    assert "cartflow.E001" in result.stderr and "inventory.tasks.release_expired_holds" in result.stderr


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("beat_schedule_as_migrated")
def test_the_check_is_silent_while_migrations_are_pending():
    """``migrate`` runs system checks before it migrates: the migration that fixes a schedule must run."""
    PeriodicTask.objects.filter(name=RELEASE).update(task="inventory.tasks.release_expired_holds")
    call_command("migrate", "payments", "0001", verbosity=0)  # the reconcile schedule's migration is pending
    assert _ids() == []
    call_command("migrate", verbosity=0)
    assert "cartflow.E001" in _ids()


def test_manage_py_check_skips_an_unreachable_database():
    result = _manage_check(f"postgres://postgres@127.0.0.1:{free_port()}/nowhere")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
