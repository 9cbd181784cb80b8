"""Telemetry and remote control of a training run over MQTT (docs/telemetry.md).

* `physlearn.telemetry.config`: the ``[telemetry]`` table (broker, credentials, topics, buffers);
* `physlearn.telemetry.payloads`: the JSON payloads of every topic (schema version), and the
  checks a remote command passes before it is acted on;
* `physlearn.telemetry.link`: the MQTT client in its own thread (aiomqtt, MQTT 5): bounded
  buffer, reconnection with bounded backoff, last will, the ``control`` subscription;
* `physlearn.telemetry.publisher`: the run's event listener that turns events into payloads
  (never blocking the training loop) and remote commands into `RunControl` requests;
* `physlearn.telemetry.session`: how ``physlearn train`` sets a run's telemetry up;
* `physlearn.telemetry.watch_model`: what ``physlearn watch`` shows, fed from a broker or a
  run directory's ``telemetry.jsonl``.

Suspenders (conditions that pause a run by themselves) live in `physlearn.training.suspenders`:
they are part of the training loop and work without a broker.
"""
