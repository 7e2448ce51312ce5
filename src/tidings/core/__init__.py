"""The domain core: plain Python that knows no sockets and no SQL."""
