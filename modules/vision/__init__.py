"""Vision tasks: PaliGemma captions, OCR, answers, boxes and masks; a chat model's question about an
image; extensions' tasks (YOLO). task.py registers the job kinds; see engine.py for the flow."""
