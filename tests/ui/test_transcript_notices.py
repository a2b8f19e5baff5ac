"""A notice that arrives mid-reply (a reroute) sits in the transcript while the reply goes on: the text
written after it still lands in the reply, and the reply still ends."""

from corolla.ui.message_view import MessageView


def test_text_after_a_reroute_notice_still_lands_in_the_reply(qtbot):
    view = MessageView()
    qtbot.addWidget(view)
    view.add_user_message("Explain bridges.", 1)
    view.begin_reply()
    view.append_text("Bridges are built ")
    view.add_notice("Server demo-1 (…y43DfWZZ) stopped answering; blocks 15–29 moved to another", "details")
    view.append_text("in stages.")
    view.end_reply("complete")
    reply = [e for e in view.entries if e.kind == "message"][-1]
    assert (reply.text, reply.state) == ("Bridges are built in stages.", "complete")
    text = view.toPlainText()
    assert "Bridges are built in stages." in text and "stopped answering" in text
