"""``esl-app bench``: a FreeSWITCH-faithful load generator, baseline servers and the report.

* ``traffic``: the frames FreeSWITCH writes for one outbound-socket call, pre-rendered from the test
  kit's channel templates at real SIP size (~10 kB connect reply, every event with the channel block);
* ``generator``: a lean fake FreeSWITCH that plays many calls over TCP from several processes
  (closed loop, open loop, hold) and measures setup latency, errors, its own CPU;
* ``servers``: the servers under test, esl-app and the baselines, each run as ``python -m``;
* ``runner``: the whole comparison in one run; ``report``: docs/benchmarks.md and the chart.

Benchmarks are commands, never part of the test run.
"""
