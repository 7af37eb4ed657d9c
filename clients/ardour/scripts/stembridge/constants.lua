-- stembridge constants for the Ardour scripts (Lua 5.3): generated from protocol/, do not edit.
-- Regenerate with: python clients/ardour/make_constants.py

local C = {}

C.PROTOCOL_VERSION = 1
C.MAX_DATAGRAM = 65000  -- bytes
C.DEFAULT_HOST = "127.0.0.1"
C.DEFAULT_PORT = 47800  -- UDP
C.DEFAULT_PREVIEW_PORT = 47810  -- UDP

--- Error codes (protocol.errors.ErrorCode): member name -> wire code.
C.ERRORS = {
  INVALID_ARGUMENT = "invalid_argument",
  INPUT_MISSING = "input_missing",
  INPUT_UNREADABLE = "input_unreadable",
  INPUT_CORRUPT = "input_corrupt",
  INPUT_EMPTY = "input_empty",
  INPUT_TOO_SHORT = "input_too_short",
  INPUT_TOO_LONG = "input_too_long",
  INPUT_NOT_FINITE = "input_not_finite",
  INPUT_CHANNELS = "input_channels",
  INPUT_SAMPLERATE = "input_samplerate",
  SOURCE_CHANGED = "source_changed",
  DECODER_MISSING = "decoder_missing",
  PACKAGE_MISSING = "package_missing",
  MODEL_UNKNOWN = "model_unknown",
  MODEL_NOT_INSTALLED = "model_not_installed",
  MODEL_CORRUPT = "model_corrupt",
  STEMS_UNSUPPORTED = "stems_unsupported",
  DEVICE_UNAVAILABLE = "device_unavailable",
  CANCELLED = "cancelled",
  OUTPUT_FAILED = "output_failed",
  INTERNAL = "internal",
  BAD_MESSAGE = "bad_message",
  UNKNOWN_ADDRESS = "unknown_address",
  UNAUTHORIZED = "unauthorized",
  TOO_MANY_JOBS = "too_many_jobs",
  UNKNOWN_JOB = "unknown_job",
  NOT_RUNNING = "not_running",
  TIMEOUT = "timeout",
  START_FAILED = "start_failed",
  REFERENCE_UNUSABLE = "reference_unusable",
  QUALITY_REGRESSION = "quality_regression",
  CLUSTER_UNAVAILABLE = "cluster_unavailable",
  STORAGE_UNAVAILABLE = "storage_unavailable",
}
-- (a name that is not a code is a mistake in the scripts: say so at once)
setmetatable(C.ERRORS, { __index = function(_, name)
  error("stembridge: no error code named " .. tostring(name), 2)
end })

--- Exit status of the command line per wire code.
C.EXIT = {
  invalid_argument = 2,
  input_missing = 3,
  input_unreadable = 4,
  input_corrupt = 4,
  input_empty = 5,
  input_too_short = 5,
  input_too_long = 5,
  input_not_finite = 5,
  input_channels = 5,
  input_samplerate = 5,
  source_changed = 4,
  decoder_missing = 6,
  package_missing = 6,
  model_unknown = 7,
  model_not_installed = 8,
  model_corrupt = 8,
  stems_unsupported = 7,
  device_unavailable = 9,
  cancelled = 130,
  output_failed = 10,
  internal = 1,
  bad_message = 12,
  unknown_address = 12,
  unauthorized = 12,
  too_many_jobs = 12,
  unknown_job = 12,
  not_running = 11,
  timeout = 11,
  start_failed = 11,
  reference_unusable = 5,
  quality_regression = 13,
  cluster_unavailable = 14,
  storage_unavailable = 15,
}

--- What a DAW user does about a code (codes without a hint are absent).
C.HINTS = {
  input_missing = "Was the item's file moved or deleted? Relink it in REAPER.",
  input_unreadable = "Render or glue the item to a WAV file, then split that.",
  input_corrupt = "Re-export the item's file, then split it.",
  input_too_long = "Split a shorter item, or raise STEMBRIDGE_MAX_SECONDS for the engine.",
  input_channels = "Set the item's channel mode to stereo and glue it, then split that.",
  input_samplerate = "Set the item's file to a lower sample rate (e.g. 48 kHz) and glue it, then split that.",
  source_changed = "Split again once the file is no longer being written.",
  decoder_missing = "Install ffmpeg for the engine, or glue the item to WAV first.",
  package_missing = "Install the package the message names into the engine's environment.",
  model_unknown = "Choose another model in stembridge: Settings (empty: the default).",
  model_not_installed = "Install the model: stembridge models fetch NAME (needs internet once), or choose another model in stembridge: Settings.",
  model_corrupt = "Fetch the model again (stembridge models fetch NAME).",
  stems_unsupported = "Choose a model that has these stems in stembridge: Settings.",
  device_unavailable = "Set the device to auto or cpu in stembridge: Settings.",
  output_failed = "Choose a writable output folder in stembridge: Settings.",
  internal = "This is a bug in stembridge; please report it with the server log.",
  bad_message = "The scripts and the engine may be different versions; update both.",
  unknown_address = "The scripts and the engine may be different versions; update both.",
  unauthorized = "Set STEMBRIDGE_TOKEN to the engine's token.",
  too_many_jobs = "Wait for the running splits to finish, or cancel them.",
  not_running = "Is the engine installed? Set its path in stembridge: Settings.",
  timeout = "The engine did not answer; is it installed? Set its path in stembridge: Settings.",
  start_failed = "The engine could not start; see its server.log.",
  reference_unusable = "Select a reference item with at least 3 s of music as the first selected item.",
}

--- Stem names per stem count, in track order (protocol.stems.STEM_SETS).
C.STEMS = {
  [2] = { "vocals", "instrumental" },
  [4] = { "vocals", "drums", "bass", "other" },
  [5] = { "vocals", "drums", "bass", "piano", "other" },
  [6] = { "vocals", "drums", "bass", "other", "guitar", "piano" },
}

--- OSC addresses (protocol.messages.Address): member name -> address.
C.ADDRESS = {
  HELLO = "/stembridge/hello",
  PING = "/stembridge/ping",
  SPLIT = "/stembridge/split",
  CANCEL = "/stembridge/cancel",
  STATUS = "/stembridge/status",
  JOBS = "/stembridge/jobs",
  RELEASE = "/stembridge/release",
  SHUTDOWN = "/stembridge/shutdown",
  WELCOME = "/stembridge/hello/reply",
  PONG = "/stembridge/pong",
  ACCEPTED = "/stembridge/job/accepted",
  STARTED = "/stembridge/job/started",
  PROGRESS = "/stembridge/job/progress",
  REGION = "/stembridge/job/region",
  DONE = "/stembridge/job/done",
  ERROR = "/stembridge/error",
  STATUS_REPLY = "/stembridge/status/reply",
  JOBS_REPLY = "/stembridge/jobs/reply",
  MASTER = "/stembridge/master",
  MASTER_DONE = "/stembridge/master/done",
}

return C
