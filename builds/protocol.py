"""Constants of the drone build protocol shared by the views and the event-loop fast paths."""
import re

#: The largest log PATCH a drone may send (told to it in the claim payload).
MAX_LOG_PATCH_BYTES = 1024 * 1024
#: `Content-Range` of a log PATCH: `<start>-<end>` (inclusive), optionally `bytes ` and a `/<total>`.
CONTENT_RANGE = re.compile(r"^(?:bytes\s+)?(\d+)-(\d+)(?:/(?:\d+|\*))?$")
