"""The pytest plugin as a user gets it: loaded through its `pytest11` entry point (no conftest),
in a pytest run of its own on a test file of the kind users write."""

import subprocess
import sys
import textwrap

USER_TESTS = textwrap.dedent(
    '''
    def test_fresh_hubs_do_not_share_a_registry_1(fresh_iothub):
        assert fresh_iothub.create_device("same-id").device_id == "same-id"

    def test_fresh_hubs_do_not_share_a_registry_2(fresh_iothub):
        assert fresh_iothub.create_device("same-id").device_id == "same-id"

    def test_session_hub_is_shared_1(iothub):
        iothub.create_device("shared-id")

    def test_session_hub_is_shared_2(iothub):
        assert iothub.get_device("shared-id")["deviceId"] == "shared-id"

    def test_both_at_once(iothub, fresh_iothub):
        assert iothub.https_port != fresh_iothub.https_port
        assert iothub.ca_pem != fresh_iothub.ca_pem
    '''
)


def _pytest(tmp_path, *args):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    return subprocess.run([sys.executable, "-m", "pytest", "--tb=short", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)


def test_fixtures_in_the_free_ports_mode(tmp_path):
    run = _pytest(tmp_path, "--iothub-ports=free")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout and "ironhub-emulator: ports=free" in run.stdout


def test_the_ini_file_chooses_the_mode(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\niothub_ports = free\n")
    run = _pytest(tmp_path, "-k", "both_at_once")
    assert run.returncode == 0, run.stdout + run.stderr


def test_two_hubs_on_the_sdk_ports_fail_fast_and_say_what_to_do(tmp_path):
    run = _pytest(tmp_path, "-k", "both_at_once")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "ironhub-emulator: ports=sdk" in run.stdout and "--iothub-ports=free" in run.stdout


def test_a_bad_mode_is_a_usage_error(tmp_path):
    run = _pytest(tmp_path, "--iothub-ports=privileged")
    assert run.returncode == 4 and "invalid choice: 'privileged'" in run.stderr
