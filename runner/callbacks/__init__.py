"""Webhook callbacks: enqueue (runner side), courier (one attempt), http (the wire), netguard (where a callback may go), worker (the RQ process)."""
