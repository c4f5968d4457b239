"""Stream helpers for Amaranth-simulator unit tests: put/get with random gaps and stalls."""


async def stream_put(ctx, stream, payload, rng=None, gap=0.0):
    """Offer `payload` on `stream` (after random idle cycles) until it is accepted."""
    while rng is not None and rng.random() < gap:
        await ctx.tick()
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, rng=None, stall=0.0, timeout=10_000):
    """Take one payload from `stream`, holding `ready` low on random cycles.
    Returns (payload, cycles waited)."""
    for cycles in range(1, timeout + 1):
        ready = rng is None or rng.random() >= stall
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if valid and ready:
            ctx.set(stream.ready, 0)
            return payload, cycles
    raise AssertionError(f"no output within {timeout} cycles: the core stopped producing")
