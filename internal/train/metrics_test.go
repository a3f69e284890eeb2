package train

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// Figures JSON lacks are written as null and read back as NaN, and a
// metrics line without its validation figures reads as no validation.
func TestNumberJSON(t *testing.T) {
	b, err := json.Marshal([]Number{0.5, Number(math.NaN()), Number(math.Inf(-1)), 0})
	if string(b) != "[0.5,null,null,0]" || err != nil {
		t.Errorf("marshal: %s, %v", b, err)
	}
	var back []Number
	if err := json.Unmarshal(b, &back); err != nil || len(back) != 4 || back[0] != 0.5 || back[1].Finite() || back[2].Finite() || back[3] != 0 {
		t.Errorf("unmarshal %s: %v, %v", b, back, err)
	}
	path := filepath.Join(t.TempDir(), MetricsFile)
	if err := os.WriteFile(path, []byte(`{"epoch":1,"train_loss":2,"val_loss":null,"val_acc":0.25}`+"\n"+`{"epoch":2,"train_loss":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMetrics(path)
	if err != nil || len(got) != 2 || !math.IsNaN(got[0].ValLoss) || got[0].ValAcc != 0.25 || !math.IsNaN(got[1].ValLoss) || !math.IsNaN(got[1].ValAcc) || got[1].TrainLoss != 1 {
		t.Errorf("ReadMetrics: %+v, %v", got, err)
	}
}
