package train

import (
	"slices"
	"strings"
	"testing"
)

// TestTickLabels: the five labels of a panel's grid differ however narrow
// the range, and carry no more decimals than that needs.
func TestTickLabels(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		want   []string
	}{
		{2.30, 2.32, []string{"2.300", "2.305", "2.310", "2.315", "2.320"}},
		{2.3012, 2.3139, []string{"2.3012", "2.3044", "2.3075", "2.3107", "2.3139"}},
		{0, 1, []string{"0.00", "0.25", "0.50", "0.75", "1.00"}},
		{0.5, 2.5, []string{"0.5", "1.0", "1.5", "2.0", "2.5"}},
		{0, 4000, []string{"0", "1000", "2000", "3000", "4000"}},
	} {
		got := tickLabels(c.lo, c.hi)
		for i := range got {
			got[i] = strings.TrimSpace(got[i])
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("tickLabels(%g, %g) = %q, want %q", c.lo, c.hi, got, c.want)
		}
	}
}
