package cifar

import (
	"bytes"
	"os"
	"testing"
)

func TestDemo(t *testing.T) {
	ds, err := Demo()
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != DemoLen || len(ds.Images) != DemoLen*ImageBytes || len(ds.Classes) != NumClasses {
		t.Fatalf("demo: %d images", ds.Len())
	}
	var counts [NumClasses]int
	for _, l := range ds.Labels {
		counts[l]++
	}
	for c, n := range counts {
		if n < 100 { // about 200 of each class
			t.Errorf("class %d: %d images", c, n)
		}
	}
	// The demo is the first 2,000 records of the real batch, unchanged.
	raw, err := os.ReadFile(realBatch)
	if err != nil {
		t.Skipf("real CIFAR-10 batch not available (%v); skipping the comparison", err)
	}
	if !bytes.Equal(binBytes(ds), raw[:DemoLen*RecordBytes]) {
		t.Fatal("demo records differ from data_batch_1.bin")
	}
}
