package pobox

/*
#include <stdlib.h>
#include <pobox.h>
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// Result is the C ABI's result code (pobox_result).
type Result int

// String is the code's name, e.g. "POBOX_ERR_NO_ENDPOINTS".
func (r Result) String() string {
	return C.GoString(C.pobox_result_name(C.pobox_result(r)))
}

// Error is a failure reported by the library: its code and its message.
// Compare kinds with errors.Is against the Err* values.
type Error struct {
	Code    Result
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "pobox: " + e.Code.String()
	}
	return "pobox: " + e.Message
}

// Is reports whether target is a kind-only *Error (like ErrNoEndpoints)
// with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Code == e.Code
}

// newError takes the message the C side allocated, and frees it.
func newError(r C.pobox_result, message *C.char) *Error {
	e := &Error{Code: Result(r)}
	if message != nil {
		e.Message = C.GoString(message)
		C.free(unsafe.Pointer(message))
	}
	return e
}

// Kinds of failure, for errors.Is.
var (
	ErrNullArgument         = &Error{Code: C.POBOX_ERR_NULL_ARGUMENT}
	ErrInvalidUTF8          = &Error{Code: C.POBOX_ERR_INVALID_UTF8}
	ErrPanic                = &Error{Code: C.POBOX_ERR_PANIC}
	ErrConfig               = &Error{Code: C.POBOX_ERR_CONFIG}
	ErrSyntax               = &Error{Code: C.POBOX_ERR_SYNTAX}
	ErrInvalidObject        = &Error{Code: C.POBOX_ERR_INVALID_OBJECT}
	ErrConflict             = &Error{Code: C.POBOX_ERR_CONFLICT}
	ErrUnknownKind          = &Error{Code: C.POBOX_ERR_UNKNOWN_KIND}
	ErrBadDestination       = &Error{Code: C.POBOX_ERR_BAD_DESTINATION}
	ErrNoService            = &Error{Code: C.POBOX_ERR_NO_SERVICE}
	ErrNoPort               = &Error{Code: C.POBOX_ERR_NO_PORT}
	ErrExternalName         = &Error{Code: C.POBOX_ERR_EXTERNAL_NAME}
	ErrNoEndpoints          = &Error{Code: C.POBOX_ERR_NO_ENDPOINTS}
	ErrBadAddress           = &Error{Code: C.POBOX_ERR_BAD_ADDRESS}
	ErrBufferTooSmall       = &Error{Code: C.POBOX_ERR_BUFFER_TOO_SMALL}
	ErrOther                = &Error{Code: C.POBOX_ERR_OTHER}
	ErrBadArgument          = &Error{Code: C.POBOX_ERR_BAD_ARGUMENT}
	ErrIO                   = &Error{Code: C.POBOX_ERR_IO}
	ErrLimit                = &Error{Code: C.POBOX_ERR_LIMIT}
	ErrClosed         error = fmt.Errorf("pobox: the mesh is closed")
	ErrProxyStopped   error = fmt.Errorf("pobox: the proxy is stopped")
)

// BatchFailure is one pick of a batch that failed.
type BatchFailure struct {
	Index int
	Err   *Error
}

// BatchError lists the picks of a PickBatch that failed.
type BatchError struct {
	Failed []BatchFailure
}

func (e *BatchError) Error() string {
	parts := make([]string, 0, len(e.Failed))
	for _, f := range e.Failed {
		parts = append(parts, fmt.Sprintf("[%d] %s", f.Index, strings.TrimPrefix(f.Err.Error(), "pobox: ")))
	}
	return fmt.Sprintf("pobox: %d picks failed: %s", len(e.Failed), strings.Join(parts, "; "))
}
