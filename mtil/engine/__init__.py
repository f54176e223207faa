"""Running the MTIL protocol: the task loop (`run`), one task's training (`train`), the optimizer and the guard
that keeps locked expert slices bit-identical (`optimizer`), evaluation rows (`evaluate`) with the task selector
(`selector`), and the policies x seeds grid (`compare`)."""
