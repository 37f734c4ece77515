package config

import (
	"fmt"
	"strconv"
	"strings"
)

var byteUnits = []struct {
	suffix string
	factor int64
}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}}

// ParseBytes reads a size such as 512MB, 1GB or 1048576 (bytes); units are powers of 1024,
// as in postgresql.conf.
func ParseBytes(s string) (int64, error) {
	upper := strings.ToUpper(strings.TrimSpace(s))
	factor := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(upper, u.suffix) {
			upper, factor = strings.TrimSpace(strings.TrimSuffix(upper, u.suffix)), u.factor
			break
		}
	}
	n, err := strconv.ParseFloat(upper, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit, such as 512MB or 1GB", s)
	}
	return int64(n * float64(factor)), nil
}
