package cutover

import (
	"strings"
	"testing"
)

func TestSwitchEntry(t *testing.T) {
	tests := []struct {
		name, content, want, err string
	}{
		{"entries only", "app = host=old port=5432 dbname=shop pool_size=20\nother = host=x\n",
			"app = host=new port=6543 dbname=shop2 pool_size=20\nother = host=x\n", ""},
		{"in a section, missing keys added", "[pgbouncer]\nlisten_port = 1\n[databases]\n; app = host=commented\napp=user=u\n",
			"[pgbouncer]\nlisten_port = 1\n[databases]\n; app = host=commented\napp = user=u host=new port=6543 dbname=shop2\n", ""},
		{"quoted values", "app = host='/var/run/pg' dbname='a b'\n", "app = host=new dbname=shop2 port=6543\n", ""},
		{"not there", "[databases]\nother = host=x\n", "", "no entry for database app"},
		{"twice", "app = host=a\napp = host=b\n", "", "two entries"},
		{"other sections only", "[pgbouncer]\napp = 1\n", "", "no entry for database app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := switchEntry([]byte(tt.content), "app", "new", 6543, "shop2")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Errorf("got %q, %v\nwant %q", got, err, tt.want)
			}
		})
	}
}
