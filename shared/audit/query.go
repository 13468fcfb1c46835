package audit

import (
	"net/http"
	"strconv"

	"github.com/scsync/scsync/shared/httpapi"
)

// QueryFromRequest reads ?after=&limit=&actor=&target= of an audit route
// for chain; a bad number is a 400 bad_request naming the parameter.
func QueryFromRequest(r *http.Request, chain string) (Query, error) {
	v := r.URL.Query()
	q := Query{Chain: chain, Actor: v.Get("actor"), Target: v.Get("target")}
	var err error
	if a := v.Get("after"); a != "" {
		if q.After, err = strconv.ParseInt(a, 10, 64); err != nil || q.After < 0 {
			return q, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "after must be an entry's seq")
		}
	}
	if l := v.Get("limit"); l != "" {
		if q.Limit, err = strconv.Atoi(l); err != nil || q.Limit < 1 || q.Limit > 5000 {
			return q, httpapi.Errorf(http.StatusBadRequest, httpapi.CodeBadRequest, "limit must be 1..5000")
		}
	}
	return q, nil
}
