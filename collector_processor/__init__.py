"""jobtrail collector processor: stitches linked RQ job attempts into the trace that enqueued them."""
