"""The fake FreeSWITCH on stopping a running application (issue 15, part 2).

What the real switch does, and what esl-app's timeout handling relies on:

* transcript 10: ``api uuid_break <uuid>`` answers ``+OK\\n`` and the running playback completes at once,
  its ``Application-Response`` still ``FILE PLAYED``;
* source (mod_commands.c ``break_function``): uuid_break sets CF_BREAK on the channel directly, so an
  ``event-lock`` on the running application does not hold it back, unlike a queued ``sendmsg`` which
  waits for the locked application to end (spec 2.4);
* source (switch_ivr.c ``switch_ivr_park``, mod_dptools bridge): park and bridge never test CF_BREAK;
  ``uuid_kill`` ends them with the call;
* static socket: the execute runs inline on the listener's thread, so even an ``api`` sent meanwhile is
  read only once the application has ended.
"""

from __future__ import annotations

import time

from test_peer import capture_frames, connected, events_until, finish, label

from esl_app.protocol import FrameKind, commands
from esl_app.testing.peer import CallScript

CAPTURE = "10_async_queueing_and_uuid_break"


def test_the_capture_shows_uuid_break_answering_ok_and_playback_reporting_file_played():
    frames = capture_frames(CAPTURE, "outbound#1")
    assert [f.body for f in frames if f.kind is FrameKind.API] == [b"+OK\n", b"+OK\n"]
    broken = [
        f.event() for f in frames
        if f.is_event and f.event().name == "CHANNEL_EXECUTE_COMPLETE"
        and f.event()["Application-UUID"] in ("aaaaaaaa-0000-4000-8000-00000000000c",
                                              "aaaaaaaa-0000-4000-8000-00000000000d")
    ]  # fmt: skip
    assert [e["Application-Response"] for e in broken] == ["FILE PLAYED", "FILE PLAYED"]


def test_uuid_break_ends_an_event_locked_playback_and_the_queued_hangup_runs_next():
    peer, client, greenlet = connected(CallScript(app_seconds={"playback": 20}))
    client.send(commands.execute("answer"))
    events_until(client, "CHANNEL_EXECUTE_COMPLETE(answer)")
    client.send(commands.execute("playback", "long.wav", event_lock=True), commands.hangup())
    assert events_until(client, "CHANNEL_EXECUTE(playback)")[:2] == ["reply:+OK", "reply:+OK"]
    assert client.quiet(0.2), "the hangup waits behind the locked playback"
    began = time.monotonic()
    reply = client.command(commands.api("uuid_break", peer.uuid))
    assert reply.kind is FrameKind.API and reply.body == b"+OK\n"  # as in the capture
    frames = []
    while (frame := client.next()) is not None and label(frame) != "CHANNEL_HANGUP":
        frames.append(frame)
    assert time.monotonic() - began < 1.5
    complete = [f.event() for f in frames if label(f) == "CHANNEL_EXECUTE_COMPLETE(playback)"]
    assert [e["Application-Response"] for e in complete] == ["FILE PLAYED"]
    client.sock.close()
    record = finish(greenlet)
    assert record.hung_up_by == "app"


def test_uuid_break_does_not_end_park_but_uuid_kill_does():
    peer, client, greenlet = connected()
    client.send(commands.execute("park", event_lock=True))
    events_until(client, "CHANNEL_EXECUTE(park)")
    assert client.command(commands.api("uuid_break", peer.uuid)).body == b"+OK\n"
    assert client.quiet(0.3), "park never tests CF_BREAK"
    assert client.command(commands.api("uuid_kill", peer.uuid, "NORMAL_TEMPORARY_FAILURE")).body == b"+OK\n"
    labels = client.labels_until_eof()
    assert "CHANNEL_HANGUP" in labels and "CHANNEL_EXECUTE_COMPLETE(park)" in labels
    record = finish(greenlet)
    assert record.hangup_cause == "NORMAL_TEMPORARY_FAILURE" and record.hung_up_by == "app"


def test_static_socket_reads_no_command_while_an_application_runs_inline():
    peer, client, greenlet = connected(CallScript(mode="static", app_seconds={"playback": 0.6}))
    began = time.monotonic()
    client.send(commands.execute("playback", "a.wav"), commands.api("uuid_break", peer.uuid))
    first = client.reply(timeout=5)
    assert label(first) == "reply:+OK" and time.monotonic() - began >= 0.5  # the playback's own +OK
    assert client.reply(timeout=5).body == b"+OK\n"  # the break, read only now: nothing left to break
    client.sock.close()
    finish(greenlet)
