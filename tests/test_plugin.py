"""The pytest plugin as a user meets it: a test file of their own, the ``esl_call`` fixture found with no
conftest and no ``-p`` option, because the installed package declares it as a ``pytest11`` entry point."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

USER_TESTS = """
import socket

import pytest

from esl_app import App, Call, Reject

app = App("shop")
closed_servers = []


@app.guard
def no_anonymous(call: Call):
    if call.caller_id_number == "anonymous":
        return Reject(code=403)
    return None


@app.route("500")
def shop(call: Call) -> None:
    call.answer()
    item = call.gather("shop/menu.wav", tries=2, regex="[0-9]")
    call.playback(f"shop/item-{item}.wav" if item else "shop/bye.wav")


def test_in_memory(esl_call):
    result = esl_call(app, "500", dtmf="7")
    assert result.verbs == ["answer", "play_and_get_digits", "playback"]
    assert result.args("playback") == ["shop/item-7.wav"]
    assert result.hangup_cause == "NORMAL_CLEARING"
    assert result.call.caller_id_number == "1001"


def test_second_try(esl_call):
    result = esl_call(app, "500", dtmf=["", "3"])
    assert result.args("playback") == ["shop/item-3.wav"]


def test_over_tcp(esl_call):
    result = esl_call.tcp(app, "500", dtmf="")
    assert result.verbs == ["answer", "play_and_get_digits", "playback"]
    assert result.args("playback") == ["shop/bye.wav"]
    assert result.hangup_cause == "NORMAL_CLEARING"
    assert any("connect reply" in line for line in result.trace)
    closed_servers.extend(server.address for server in esl_call._servers)


def test_the_tcp_server_was_stopped_after_the_test():
    assert len(closed_servers) == 1
    with pytest.raises(OSError):
        socket.create_connection(closed_servers[0], timeout=1).close()


def test_refused_by_the_guard(esl_call):
    result = esl_call(app, "500", caller_id_number="anonymous")
    assert result.verbs == ["respond"]
    assert result.responded == "403 Forbidden"
    assert result.hangup_cause == "CALL_REJECTED"
    assert not result.answered


def test_no_route(esl_call):
    result = esl_call(app, "501")
    assert result.responded == "404 Not Found"
    assert result.hangup_cause == "UNALLOCATED_NUMBER"


def test_caller_hangs_up(esl_call):
    result = esl_call(app, "500", hangup_at=2, hangup_cause="ORIGINATOR_CANCEL")
    assert result.verbs == ["answer", "play_and_get_digits"]
    assert result.hangup_cause == "ORIGINATOR_CANCEL"


def test_calls_are_kept_on_the_placer(esl_call):
    first = esl_call(app, "500")
    second = esl_call(app, destination="501")
    assert esl_call.calls == [first, second]


def test_fixture_is_the_entry_point_plugin(request):
    import esl_app.testing.plugin

    assert request.config.pluginmanager.get_plugin("esl_app") is esl_app.testing.plugin
"""
USER_TEST_COUNT = USER_TESTS.count("\ndef test_")


@pytest.fixture
def user_tests(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("PYTEST_PLUGINS", raising=False)
    pytester.makepyfile(test_shop=USER_TESTS)
    return pytester


def test_the_package_declares_the_pytest11_entry_point():
    (entry,) = [ep for ep in entry_points(group="pytest11") if ep.name == "esl_app"]
    assert entry.value == "esl_app.testing.plugin"
    assert entry.dist is not None and entry.dist.name == "esl-app"


def test_a_users_test_file_passes(user_tests: pytest.Pytester):
    assert not list(user_tests.path.glob("conftest.py"))
    result = user_tests.runpytest()  # no -p, no conftest: the fixture can only come from the entry point
    result.assert_outcomes(passed=USER_TEST_COUNT)


def test_a_users_test_file_passes_in_a_fresh_interpreter(user_tests: pytest.Pytester):
    result = user_tests.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=USER_TEST_COUNT)


def test_fixtures_listing_names_the_plugin_module(user_tests: pytest.Pytester):
    result = user_tests.runpytest("--fixtures")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*fixtures defined from esl_app.testing.plugin*", "esl_call*"])


def test_without_the_entry_point_plugin_the_fixture_is_missing(user_tests: pytest.Pytester):
    result = user_tests.runpytest("-p", "no:esl_app")
    uses_fixture = USER_TESTS.count("(esl_call)")
    # the two tests without the fixture: one fails (no server was recorded), one cannot see the plugin
    result.assert_outcomes(errors=uses_fixture, failed=USER_TEST_COUNT - uses_fixture)
    result.stdout.fnmatch_lines(["*fixture 'esl_call' not found*"])


def test_a_failing_flow_assertion_is_reported(pytester: pytest.Pytester):
    pytester.makepyfile(
        test_wrong="""
        from esl_app import App

        app = App("wrong")

        @app.route("1000")
        def flow(call):
            call.answer()

        def test_expects_a_prompt(esl_call):
            result = esl_call(app, "1000")
            assert result.verbs == ["answer", "playback"]
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r".*AssertionError: assert \['answer'\] == \['answer', 'playback'\]$"])
