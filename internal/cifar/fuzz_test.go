package cifar

import "testing"

func FuzzReadBin(f *testing.F) {
	good := binBytes(synth(2, 0, 1))
	f.Add(good)
	f.Add(good[:RecordBytes+7])
	f.Add([]byte{10})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := parseBin(b)
		if err != nil {
			return
		}
		if ds.Len()*RecordBytes != len(b) || len(ds.Images) != ds.Len()*ImageBytes {
			t.Fatalf("%d records from %d bytes", ds.Len(), len(b))
		}
		for _, l := range ds.Labels {
			if l >= NumClasses {
				t.Fatalf("label %d accepted", l)
			}
		}
	})
}

func FuzzReadPickle(f *testing.F) {
	// Small valid files in both encodings, the meta file, and the corrupt
	// cases, as seeds for the mutator.
	f.Add(batchPickle(synth(2, 0, 1), "b", false))
	f.Add(batchPickle(synth(1, 0, 1), "b", true))
	f.Add(metaPickle(testClasses, 2, false))
	for _, b := range corruptPickles() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if ds, err := parsePickleBatch(b); err == nil {
			if len(ds.Images) != ds.Len()*ImageBytes {
				t.Fatalf("%d image bytes for %d labels", len(ds.Images), ds.Len())
			}
			for _, l := range ds.Labels {
				if l >= NumClasses {
					t.Fatalf("label %d accepted", l)
				}
			}
		}
		if names, err := parseMetaPickle(b); err == nil && len(names) != NumClasses {
			t.Fatalf("%d class names accepted", len(names))
		}
	})
}
