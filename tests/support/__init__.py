"""What the tests share; no tests here (pytest never collects this package).

* :mod:`support.peer`: :class:`~support.peer.ScriptedPeer`, a server on 127.0.0.1:0
  that plays exact bytes, its steps, and :func:`~support.peer.raw_server` for servers
  that react instead of following a fixed script;
* :mod:`support.server`: our own :class:`~fastsmtp.server.SMTPServer` for a test
  (:func:`~support.server.serve`), a recording handler, and a raw client checking bytes;
* :mod:`support.ports`: bound sockets instead of "free" port numbers;
* :mod:`support.env`: external peer programs and ``python -m fastsmtp`` children;
* :mod:`support.cores`: the codec's two implementations;
* :mod:`support.vectors`: the codec's shared test vectors.

Test modules import from here and never from one another (nor from ``conftest``).
"""
