"""Running the MTIL protocol: the task loop (`run`), one task's training (`train`), the adapters' optimizer
(`optimizer`), the guard that keeps locked expert slices bit-identical (`slice_guard`), the run checkpoint
(`checkpoint`), evaluation rows (`evaluate`) with the task selector (`selector`), and the policies x seeds grid
(`compare`)."""
