// The error a request gets: an HTTP status and OpenAI's error fields {message, type, param, code}.
/** A request error with OpenAI's error fields. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | number | null = null,
    readonly type = status === 404 ? "not_found_error" : status >= 500 ? "server_error" : "invalid_request_error",
  ) {
    super(message);
    this.name = "ApiError";
  }
}
