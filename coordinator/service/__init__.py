"""The release gate as its own process: the gate service and its client.

The gate runs under its own OS user, the only one that can read the linked dataset, the keys and the ledger and
write ``released/`` (docs/deployment.md). The operator's CLI reaches it over a local socket.

- ``protocol``: the wire protocol (versioned newline-delimited JSON, pydantic models for every request/reply);
- ``ops``: the operations behind one dispatch table (``ping``, ``status``, ``ledger``, ``analyse``);
- ``server``: the AF_UNIX server (``kansrijk gate serve``);
- ``client``: the operator's side (``kansrijk gate ping/status/ledger``, ``coordinator analyse --gate-socket``);
- ``harden``: owners and modes of a deployed workspace (``kansrijk gate harden``);
- ``process``: start and stop a service as a child process (the demo and the tests).
"""
