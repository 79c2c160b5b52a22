/* A minimal TFLite external delegate for tests: loads through the real load_delegate path,
 * records its options and that Prepare ran (to the file named by $STUB_DELEGATE_RECORD),
 * claims no nodes, so the model then runs on the CPU. The struct is declared here because
 * no TFLite headers ship in the wheels (FINDINGS.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct TfLiteDelegate {
  void* data_;
  int (*Prepare)(void* context, struct TfLiteDelegate* delegate);
  int (*CopyFromBufferHandle)(void*, struct TfLiteDelegate*, int, void*);
  int (*CopyToBufferHandle)(void*, struct TfLiteDelegate*, int, void*);
  void (*FreeBufferHandle)(void*, struct TfLiteDelegate*, int*);
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

static void record(const char* line) {
  const char* path = getenv("STUB_DELEGATE_RECORD");
  if (!path) return;
  FILE* f = fopen(path, "a");
  if (!f) return;
  fprintf(f, "%s\n", line);
  fclose(f);
}

static int prepare(void* context, TfLiteDelegate* delegate) {
  (void)context; (void)delegate;
  record("prepare");
  return 0; /* kTfLiteOk, no nodes claimed */
}

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                              void (*report_error)(const char*)) {
  char line[512];
  for (size_t i = 0; i < n; ++i) {
    if (strcmp(keys[i], "fail") == 0) {
      report_error("stub asked to fail");
      return NULL;
    }
    snprintf(line, sizeof line, "option %s=%s", keys[i], values[i]);
    record(line);
  }
  TfLiteDelegate* d = (TfLiteDelegate*)calloc(1, sizeof(TfLiteDelegate));
  d->Prepare = prepare;
  record("create");
  return d;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* d) {
  record("destroy");
  free(d);
}
