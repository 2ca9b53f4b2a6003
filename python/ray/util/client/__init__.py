"""Ray Client: `ray.init("ray://HOST:PORT")` runs the Ray API from a process
outside the cluster, through the Ray Client server on the head node (port
10001 unless `ray start --ray-client-server-port` says otherwise).

`common` is the wire format and handshake, `worker` the client end,
`server` the listener that `ray start --head` runs, and `session` the driver
that serves one client."""
